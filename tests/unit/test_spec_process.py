"""Process argv, environment, working directory, rlimits, stop signal and exec process."""

from __future__ import annotations

import signal

import pytest

from base.errors import InvalidArgument
from oci.spec.process import (
    DEFAULT_PATH,
    nofile_rlimit,
    process_for_exec,
    resolve_args,
    resolve_cwd,
    resolve_env,
    stop_signal,
)


class TestArgs:
    def test_command_and_args_replace_image_entrypoint_and_cmd(self) -> None:
        assert resolve_args(["/bin/app"], ["-v"], ["/entry"], ["cmd"]) == ["/bin/app", "-v"]

    def test_command_alone_does_not_take_image_cmd(self) -> None:
        assert resolve_args(["/bin/app"], [], ["/entry"], ["cmd"]) == ["/bin/app"]

    def test_args_alone_follow_image_entrypoint(self) -> None:
        assert resolve_args([], ["x", "y"], ["/entry", "-a"], ["cmd"]) == [
            "/entry", "-a", "x", "y",
        ]

    def test_args_alone_without_entrypoint(self) -> None:
        assert resolve_args([], ["sh"], [], ["cmd"]) == ["sh"]

    def test_neither_uses_entrypoint_then_cmd(self) -> None:
        assert resolve_args([], [], ["/entry"], ["a", "b"]) == ["/entry", "a", "b"]

    def test_nothing_at_all_is_invalid(self) -> None:
        with pytest.raises(InvalidArgument, match="no command specified"):
            resolve_args([], [], [], [])


class TestEnv:
    def test_request_wins_and_defaults_added(self) -> None:
        env = resolve_env(
            ["A=image", "B=keep", "NOEQ"],
            [("A", "request"), ("C", "x=y")],
            hostname="pod-1",
            tty=False,
            home="/root",
        )
        assert env == [
            "A=request",
            "B=keep",
            "NOEQ=",
            "HOSTNAME=pod-1",
            "C=x=y",
            f"PATH={DEFAULT_PATH}",
            "HOME=/root",
        ]

    def test_image_path_kept_and_term_with_tty(self) -> None:
        env = resolve_env(["PATH=/bin"], [], hostname="", tty=True, home="")
        assert env == ["PATH=/bin", "HOME=/", "TERM=xterm"]

    def test_request_overrides_hostname(self) -> None:
        env = resolve_env([], [("HOSTNAME", "mine")], hostname="pod", tty=False, home="/")
        assert "HOSTNAME=mine" in env and "HOSTNAME=pod" not in env

    def test_bad_names_rejected(self) -> None:
        with pytest.raises(InvalidArgument):
            resolve_env([], [("", "v")], hostname="", tty=False, home="/")
        with pytest.raises(InvalidArgument, match="must not contain"):
            resolve_env([], [("A=B", "v")], hostname="", tty=False, home="/")


class TestCwd:
    def test_request_then_image_then_root(self) -> None:
        assert resolve_cwd("/work", "/img") == "/work"
        assert resolve_cwd("", "/img") == "/img"
        assert resolve_cwd("", "") == "/"
        assert resolve_cwd("", "rel") == "/rel"

    def test_relative_request_dir_rejected(self) -> None:
        with pytest.raises(InvalidArgument, match="absolute"):
            resolve_cwd("work", "")


def test_nofile_limited_by_daemon_hard_limit() -> None:
    assert nofile_rlimit(1048576, 20000) == {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}
    assert nofile_rlimit(1024, 20000)["hard"] == 1024
    assert nofile_rlimit(1048576, None)["soft"] == 1048576


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", signal.SIGTERM), ("SIGKILL", signal.SIGKILL), ("quit", signal.SIGQUIT),
     ("2", signal.SIGINT)],
)
def test_stop_signal(text: str, expected: signal.Signals) -> None:
    assert stop_signal(text) == expected


def test_unknown_stop_signal() -> None:
    with pytest.raises(InvalidArgument, match="SIGNOPE"):
        stop_signal("SIGNOPE")


def test_process_for_exec_keeps_identity_and_replaces_argv() -> None:
    spec = {
        "process": {
            "terminal": False,
            "consoleSize": {"height": 1, "width": 1},
            "user": {"uid": 5, "gid": 6, "additionalGids": [6]},
            "args": ["sleep", "1"],
            "env": ["A=1"],
            "cwd": "/w",
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": True,
        }
    }
    process = process_for_exec(spec, ["ls", "-l"], tty=True)
    assert process == {
        "terminal": True,
        "user": {"uid": 5, "gid": 6, "additionalGids": [6]},
        "args": ["ls", "-l"],
        "env": ["A=1"],
        "cwd": "/w",
        "capabilities": {"bounding": ["CAP_KILL"]},
        "noNewPrivileges": True,
    }
    assert spec["process"]["args"] == ["sleep", "1"]  # the spec itself is untouched
    with pytest.raises(InvalidArgument):
        process_for_exec(spec, [], tty=False)
