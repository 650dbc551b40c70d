"""peapod's side of the conmon monitor protocol.

``launch`` creates a container through conmon (start/sync pipes, pidfiles),
``files`` reads exit/OOM files, ``crilog`` parses CRI logs, ``attach`` and
``ctl`` talk to a running conmon, ``exec_sync`` runs a one-shot conmon for
ExecSync in a scratch directory (``exec_scratch``, which also removes what a
killed daemon's execs left). ``argv``, ``paths``, ``sync_pipe`` and ``procs``
are the pieces.
"""
