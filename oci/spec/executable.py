"""Is the container's command there to run? Checked in the rootfs before any runtime runs.

runc looks the command up only inside its init, so a missing binary would come back
as a runtime failure; CRI-O answers it at CreateContainer and so does peapod. The
lookup follows exec's rules: a name with a '/' is a path (relative to the working
directory), any other is searched in the process's PATH. A path under a mount (a
volume, /proc, /dev...) is not the image's to answer for and is not checked.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from typing import Any

from base.errors import InvalidArgument
from base.text import shorten
from oci.spec.process import DEFAULT_PATH
from oci.spec.user import resolve_in_root

# More PATH entries than this are not searched here (runc will search them all).
_MAX_SEARCHED = 256


def _under(path: str, mounts: Iterable[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _env_path(env: Iterable[str]) -> str:
    for item in env:
        if item.startswith("PATH="):
            return item[len("PATH=") :]
    return DEFAULT_PATH


def _found(rootfs: str, path: str, mounts: list[str]) -> bool:
    """Whether ``path`` (in the container) is an executable file, or on a mount."""
    if _under(path, mounts):
        return True
    try:
        host = resolve_in_root(rootfs, path)
    except OSError:
        return False
    relative = os.path.relpath(host, rootfs)
    inside = "/" if relative == "." else "/" + relative
    if _under(inside, mounts):
        return True
    try:
        st = os.stat(host)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def check_executable(spec: dict[str, Any], rootfs: str, argv: Sequence[str] = ()) -> None:
    """InvalidArgument unless ``argv[0]`` (default: the spec's process) can be executed."""
    process = spec["process"]
    command = (argv or process["args"])[0]
    if not command:
        raise InvalidArgument("the container command is empty")
    cwd = process.get("cwd") or "/"
    mounts = [posixpath.normpath(m["destination"]) for m in spec.get("mounts", [])]
    if "/" in command:
        candidates = [posixpath.normpath(posixpath.join(cwd, command))]
        where = "in the container's filesystem"
    else:
        search = _env_path(process.get("env", []))
        dirs = search.split(":")
        if len(dirs) > _MAX_SEARCHED:
            return
        candidates = [posixpath.join(cwd, d, command) for d in dirs]
        where = f"in PATH {shorten(search)}"
    if not any(_found(rootfs, c, mounts) for c in candidates):
        raise InvalidArgument(
            f"the container command {shorten(command)} is not an executable file {where}; "
            "check command, args and the image's entrypoint"
        )
