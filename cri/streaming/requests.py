"""What a streaming URL stands for: the validated Exec, Attach or PortForward request."""

from __future__ import annotations

from dataclasses import dataclass

EXEC = "exec"
ATTACH = "attach"
PORTFORWARD = "portforward"


@dataclass(frozen=True)
class StreamRequest:
    """One validated request, held behind a token until a client connects."""

    kind: str  # EXEC, ATTACH or PORTFORWARD
    target: str  # container id (exec, attach) or pod sandbox id (port-forward)
    cmd: tuple[str, ...] = ()
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    ports: tuple[int, ...] = ()

    @property
    def stream_count(self) -> int:
        """Streams a SPDY remotecommand client opens: error, the stdio asked for, resize."""
        return 1 + self.stdin + self.stdout + self.stderr + self.tty
