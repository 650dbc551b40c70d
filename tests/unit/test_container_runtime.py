"""Runtime handlers, the runtime command line (against a scripted fake runtime), exit watching."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from cri import config as configmod
from cri.services import runtime_handlers
from oci.container import runtime_cli
from oci.container.exit_watcher import IN_MOVED_TO, ExitWatcher, parse_events
from oci.container.runtimes import RuntimeHandler, probe_features, resolve_binary

# A fake runtime: logs its argv and stdin, then fails like runc when FAKE_ERR is set.
FAKE = """#!{python}
import os, sys
cmd = [a for a in sys.argv[1:] if not a.startswith("--root=")][0]
if cmd == "features":
    print('{{"mountOptions": ["rbind", "rro"]}}')
    sys.exit(0)
data = sys.stdin.read() if "-" in sys.argv else ""
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "|" + data + "\\n")
if os.environ.get("FAKE_HANG"):
    import time
    time.sleep(60)
err = os.environ.get("FAKE_ERR")
if err:
    sys.stderr.write('time="2026-01-01T00:00:00Z" level=error msg="' + err + '"\\n')
    sys.exit(1)
if cmd == "state":
    print('{{"id": "c1", "status": "running"}}')
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RuntimeHandler, Path]:
    script = tmp_path / "fake-runc"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "log"
    env = {"FAKE_LOG": str(log), "PATH": os.environ.get("PATH", "")}
    handler = RuntimeHandler("fake", str(script), str(tmp_path / "root"), "/bin/false", env, 5.0)
    return handler, log


def with_err(handler: RuntimeHandler, err: str) -> RuntimeHandler:
    env = dict(handler.monitor_env, FAKE_ERR=err)
    return RuntimeHandler(handler.name, handler.runtime_path, handler.runtime_root,
                          handler.monitor_path, env, handler.create_timeout)  # fmt: skip


def test_cli_argv_and_stdin(fake: tuple[RuntimeHandler, Path]) -> None:
    h, log = fake
    runtime_cli.start(h, "c1")
    assert runtime_cli.kill(h, "c1", 15)
    assert runtime_cli.kill(h, "c1", 9, all_processes=True)
    runtime_cli.update(h, "c1", {"cpu": {"shares": 2}})
    runtime_cli.delete(h, "c1")
    assert runtime_cli.state(h, "c1") == {"id": "c1", "status": "running"}
    root = f"--root={h.runtime_root}"
    assert log.read_text().splitlines() == [
        f"{root} start c1|",
        f"{root} kill c1 15|",
        f"{root} kill --all c1 9|",
        f'{root} update --resources - c1|{{"cpu": {{"shares": 2}}}}',
        f"{root} delete --force c1|",
        f"{root} state c1|",
    ]


def test_cli_errors_carry_the_runtime_message(fake: tuple[RuntimeHandler, Path]) -> None:
    h, _ = fake
    with pytest.raises(Internal, match="exec format error"):
        runtime_cli.start(with_err(h, "exec format error"), "c1")
    with pytest.raises(NotFound):
        runtime_cli.start(with_err(h, "container does not exist"), "c1")
    assert not runtime_cli.kill(with_err(h, "container not running"), "c1", 15)
    with pytest.raises(Internal, match="permission denied"):
        runtime_cli.kill(with_err(h, "permission denied"), "c1", 15)
    runtime_cli.delete(with_err(h, "container does not exist"), "c1")  # idempotent
    with pytest.raises(FailedPrecondition):
        runtime_cli.update(with_err(h, "container not running"), "c1", {})
    assert runtime_cli.state(with_err(h, "container does not exist"), "c1") is None


def test_a_hung_runtime_is_killed_at_the_callers_deadline(
    fake: tuple[RuntimeHandler, Path],
) -> None:
    h, log = fake
    hung = RuntimeHandler(h.name, h.runtime_path, h.runtime_root, h.monitor_path,
                          dict(h.monitor_env, FAKE_HANG="1"), h.create_timeout)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.[0-9]s"):
        runtime_cli.start(hung, "c1", CallContext.with_timeout(0.5, "test"))
    assert time.monotonic() - start < 10
    assert log.read_text().splitlines() == [f"--root={h.runtime_root} start c1|"]


def test_features_probe(fake: tuple[RuntimeHandler, Path], tmp_path: Path) -> None:
    h, _ = fake
    assert probe_features(h.runtime_path).recursive_read_only_mounts
    assert not probe_features(str(tmp_path / "missing")).recursive_read_only_mounts


def test_handlers_from_config(tmp_path: Path) -> None:
    cfg = configmod.Config(runroot=str(tmp_path))
    cfg.runtime.runtimes["b"] = configmod.RuntimeHandlerConfig(
        runtime_path="runc", runtime_root="/tmp/b-root", monitor_env=["PATH=/x", "A=b=c"]
    )
    handlers = runtime_handlers(cfg)
    assert handlers.names() == ["runc", "b", "crun"]
    assert handlers.get("").name == "runc"
    assert handlers.get("runc").runtime_root == str(tmp_path / "runtimes" / "runc")
    b = handlers.get("b")
    assert b.runtime_root == "/tmp/b-root"
    assert os.path.isabs(b.runtime_path) and b.runtime_path == resolve_binary("runc")
    assert dict(b.monitor_env) == {"PATH": "/x", "A": "b=c"}
    with pytest.raises(InvalidArgument, match="known handlers: runc, b, crun"):
        handlers.get("kata")
    cfg.runtime.runtimes["b"].monitor_env = ["NOEQUALS"]
    with pytest.raises(InvalidArgument, match="NOEQUALS"):
        runtime_handlers(cfg)


def test_config_checks_the_runtime_section(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("runtime:\n  default_runtime: kata\n")
    with pytest.raises(configmod.ConfigError, match=r"'kata', which is not in runtime\.runtimes"):
        configmod.load(main, None)
    main.write_text("runtime:\n  log_size_max: 100\n")
    with pytest.raises(configmod.ConfigError, match="at least 8192"):
        configmod.load(main, None)
    main.write_text(
        "runtime:\n  default_runtime: b\n  runtimes:\n    b:\n      runtime_root: /r\n"
    )
    cfg = configmod.load(main, None)
    assert list(cfg.runtime.runtimes) == ["b"] and cfg.runtime.runtimes["b"].runtime_root == "/r"


def test_parse_events() -> None:
    import struct

    name = b"abc\0\0\0\0\0"
    buf = struct.pack("iIII", 1, IN_MOVED_TO, 0, len(name)) + name
    buf += struct.pack("iIII", 1, IN_MOVED_TO, 0, 0)
    assert parse_events(buf) == [(IN_MOVED_TO, "abc"), (IN_MOVED_TO, "")]


def test_exit_watcher_reports_existing_and_new_files(tmp_path: Path) -> None:
    exits = tmp_path / "exits"
    exits.mkdir()
    (exits / "before").write_text("0")
    seen: list[str] = []
    got = threading.Event()

    def on_exit(name: str) -> None:
        seen.append(name)
        if name == "renamed":
            got.set()

    watcher = ExitWatcher(str(exits), on_exit)
    watcher.start()
    try:
        assert seen == ["before"]
        tmp = exits / "renamed.X1Y2"  # conmon writes a temporary name, then renames
        tmp.write_text("3")
        tmp.rename(exits / "renamed")
        assert got.wait(5), seen
        time.sleep(0.05)
        assert seen == ["before", "renamed"]
    finally:
        watcher.close()
