"""The remotecommand result on the error stream: Kubernetes Status JSON (v4 and v5) or text."""

from __future__ import annotations

import json


def success() -> bytes:
    return json.dumps({"metadata": {}, "status": "Success"}).encode()


def exit_failure(code: int) -> bytes:
    """The Status a client turns into the command's exit code."""
    return json.dumps({
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }).encode()


def internal_error(message: str) -> bytes:
    """The Status for a failure that is not the command's exit code."""
    return json.dumps({
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }).encode()


def for_exit(code: int, json_status: bool) -> bytes:
    """What to write on the error stream for exit ``code``: JSON (v4+) or text, b"" for none."""
    if json_status:
        return success() if code == 0 else exit_failure(code)
    return b"" if code == 0 else f"command terminated with non-zero exit code: {code}".encode()


def for_error(message: str, json_status: bool) -> bytes:
    return internal_error(message) if json_status else message.encode()
