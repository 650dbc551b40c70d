"""conmon/ against the real conmon 2.1.6 and runc with a busybox rootfs.

Every container, directory and cgroup is named ``pp-cm-<random>``; teardown
deletes runtime state, kills leftover conmon/container processes, removes the
cgroups and the temporary directory even when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from base.cancel import CallContext
from base.errors import Cancelled, DeadlineExceeded, FailedPrecondition, Internal, NotFound
from conmon import crilog, files, procs
from conmon.attach import STDERR, STDOUT, attach
from conmon.ctl import reopen_log, resize
from conmon.exec_sync import exec_sync
from conmon.launch import Created, create_container
from conmon.paths import MonitorPaths

CONMON = shutil.which("conmon") or "/usr/bin/conmon"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "pp-cm-"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(os.access(p, os.X_OK) for p in (CONMON, RUNC, BUSYBOX)),
    reason="needs root, conmon, runc and busybox",
)

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

TS_RE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}[+-]\d{2}:\d{2}"


def uniq() -> str:
    return PREFIX + secrets.token_hex(5)


def build_rootfs(root: Path) -> None:
    """A busybox rootfs: /bin/busybox plus a hard link per applet."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in applets:
        if name != "busybox" and "/" not in name:
            os.link(bindir / "busybox", bindir / name)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir()


def oci_config(rootfs: Path, args: list[str], cgroup: str, *, tty: bool = False) -> dict:
    """A minimal OCI runtime config for ``args`` in new namespaces."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": tty,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "capabilities": {k: DEFAULT_CAPS for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "pp",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": f"/{cgroup}",
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def cgroup_dirs(name: str) -> list[Path]:
    """Every directory called ``name`` directly under a cgroup hierarchy root."""
    return [d / name for d in CGROUP_ROOT.iterdir() if (d / name).is_dir()]


@dataclass
class Ctr:
    """One test container: its id, paths and the create result."""

    id: str
    paths: MonitorPaths
    cgroup: str
    config: dict
    created: Created | None = None


@dataclass
class Lab:
    """A scratch area: rootfs, runtime root, shared exit/socket dirs, cleanup."""

    base: Path
    rootfs: Path
    runtime_root: Path
    exit_dir: Path
    socket_dir: Path
    ctrs: list[Ctr] = field(default_factory=list)
    extra_cgroups: list[str] = field(default_factory=list)
    extra_pids: list[int] = field(default_factory=list)

    def container(self, args: list[str], *, tty: bool = False) -> Ctr:
        cid = uniq()
        bundle = self.base / "b" / cid
        persist = self.base / "p" / cid
        bundle.mkdir(parents=True)
        persist.mkdir(parents=True)
        cfg = oci_config(self.rootfs, args, cid, tty=tty)
        (bundle / "config.json").write_text(json.dumps(cfg))
        paths = MonitorPaths.standard(
            str(bundle),
            exit_dir=str(self.exit_dir),
            persist_dir=str(persist),
            socket_dir=str(self.socket_dir),
            log_path=str(self.base / "logs" / f"{cid}.log"),
        )
        ctr = Ctr(cid, paths, cid, cfg)
        self.ctrs.append(ctr)
        return ctr

    def create(self, ctr: Ctr, **kw: object) -> Created:
        kw.setdefault("log_level", "debug")
        ctr.created = create_container(
            CONMON, RUNC, str(self.runtime_root), ctr.id, f"k8s_{ctr.id}", ctr.paths,
            timeout=30.0, **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        return ctr.created

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNC, "--root", str(self.runtime_root), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def start(self, ctr: Ctr) -> None:
        self.runc("start", ctr.id)

    def state(self, ctr: Ctr) -> dict | None:
        r = self.runc("state", ctr.id, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_exit(self, ctr: Ctr, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = files.read_exit_file(str(self.exit_dir), ctr.id)
            if code is not None:
                return code
            time.sleep(0.02)
        raise AssertionError(f"no exit file for {ctr.id} after {timeout}s")

    def cleanup(self) -> None:
        """Delete runtime state, kill our leftovers, remove cgroups and files."""
        for ctr in self.ctrs:
            self.runc("delete", "--force", ctr.id, check=False)
        for pid in conmon_pids(self.base) + [p for p in self.extra_pids if _mentions(p, self.base)]:
            procs.kill_tree(pid)
        for name in [c.cgroup for c in self.ctrs] + self.extra_cgroups:
            remove_cgroup(name)
        shutil.rmtree(self.base, ignore_errors=True)


def remove_cgroup(name: str) -> None:
    """Kill what is left in cgroup ``name`` (every hierarchy) and rmdir it."""
    for d in cgroup_dirs(name):
        for _ in range(100):
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def _mentions(pid: int, base: Path) -> bool:
    try:
        return str(base).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def conmon_pids(base: Path) -> list[int]:
    """Live conmon processes whose command line mentions ``base``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmd
            and cmd[0].endswith(b"conmon")
            and any(str(base).encode() in a for a in cmd)
            and procs.is_alive(int(entry))
        ):
            out.append(int(entry))
    return out


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=PREFIX + "rootfs-"))
    try:
        build_rootfs(base / "rootfs")
        yield base / "rootfs"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lab(rootfs: Path) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix=PREFIX))
    for d in ("root", "exits", "s", "logs", "b", "p"):
        (base / d).mkdir()
    lab = Lab(base, rootfs, base / "root", base / "exits", base / "s")
    try:
        yield lab
    finally:
        lab.cleanup()


def exec_spec(ctr: Ctr, args: list[str]) -> dict:
    spec = dict(ctr.config["process"])
    spec["args"] = args
    return spec


def run_exec(lab: Lab, ctr: Ctr, args: list[str], timeout: int | None = 10, **kw: object):
    return exec_sync(
        CONMON, RUNC, str(lab.runtime_root), ctr.id, exec_spec(ctr, args), timeout,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def running(lab: Lab, args: list[str], **kw: object) -> Ctr:
    ctr = lab.container(args)
    lab.create(ctr, **kw)
    lab.start(ctr)
    return ctr


def stop(lab: Lab, ctr: Ctr) -> int:
    lab.runc("kill", ctr.id, "KILL", check=False)
    return lab.wait_exit(ctr)


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


LOG_LINE_RE = re.compile(rb"^(" + TS_RE.encode() + rb") (stdout|stderr) ([PF]) (.*)$")


# -- create, logs, exit ------------------------------------------------------


def test_logs_have_cri_format_and_partial_lines(lab: Lab) -> None:
    long_line = "x" * 20000
    ctr = lab.container(["sh", "-c", f"echo out1; echo err1 >&2; echo {long_line}; printf tail"])
    created = lab.create(ctr)
    assert created.pid > 0 and created.monitor_pid > 0
    assert procs.is_alive(created.pid) and procs.is_alive(created.monitor_pid)
    lab.start(ctr)
    assert lab.wait_exit(ctr) == 0
    raw = Path(ctr.paths.log_path).read_bytes()
    assert raw.endswith(b"\n")
    matches = [LOG_LINE_RE.match(line) for line in raw.split(b"\n")[:-1]]
    assert all(matches), raw[:500]
    lines = crilog.read_log(ctr.paths.log_path, strict=True)
    assert [(m[2].decode(), m[3] == b"P") for m in matches] == [
        (ln.stream, ln.partial) for ln in lines
    ]
    stdout = [ln for ln in lines if ln.stream == "stdout"]
    assert stdout[0].content == b"out1" and not stdout[0].partial
    assert [ln.content for ln in lines if ln.stream == "stderr"] == [b"err1"]
    # The 20000-byte line is split into >= 1 P chunk(s) and then an F.
    big = stdout[1:-1]
    assert len(big) >= 2 and all(ln.partial for ln in big[:-1]) and not big[-1].partial
    assert all(len(ln.content) <= 8192 for ln in big)
    assert stdout[-1].partial and stdout[-1].content == b"tail"
    messages = crilog.reassemble(lines)
    assert ("stdout", long_line.encode() + b"\n") in messages
    assert messages[-1] == ("stdout", b"tail")
    # Timestamps are monotone and close to now.
    stamps = [ln.timestamp_ns for ln in lines]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns()) < 60 * 10**9


def test_exit_code_lands_in_exit_dir_and_persist_dir(lab: Lab) -> None:
    ctr = lab.container(["sh", "-c", "exit 3"])
    lab.create(ctr)
    assert files.read_exit_file(str(lab.exit_dir), ctr.id) is None
    assert files.read_persisted_exit(ctr.paths.persist_dir) is None
    before = time.time_ns()
    lab.start(ctr)
    assert lab.wait_exit(ctr) == 3
    persisted = wait_for(lambda: files.read_persisted_exit(ctr.paths.persist_dir))
    code, finished = persisted
    assert code == 3
    assert before - 10**9 <= finished <= time.time_ns() + 10**9
    assert not files.oom_killed(ctr.paths.persist_dir)
    # The monitor goes away once the container is gone.
    assert procs.wait_gone([ctr.created.monitor_pid], 5.0)
    files.remove_exit_file(str(lab.exit_dir), ctr.id)
    assert files.read_exit_file(str(lab.exit_dir), ctr.id) is None


def test_signal_exit_is_128_plus_signal(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    assert stop(lab, ctr) == 128 + signal.SIGKILL


def test_bad_spec_reports_runtime_message_and_leaves_nothing(lab: Lab) -> None:
    ctr = lab.container(["/no/such/binary"])
    with pytest.raises(Internal) as err:
        lab.create(ctr)
    msg = err.value.message
    assert ctr.id in msg and "/no/such/binary" in msg, msg
    assert "no such file or directory" in msg.lower(), msg
    assert conmon_pids(lab.base) == []
    listed = lab.runc("list", "-q").stdout.split()
    assert listed == []
    assert cgroup_dirs(ctr.cgroup) == []


def test_create_timeout_kills_conmon_and_runtime(lab: Lab) -> None:
    fake = lab.base / "slow-runtime"
    fake.write_text('#!/bin/sh\ncase "$*" in *" create "*) exec sleep 60;; esac\nexit 0\n')
    fake.chmod(0o755)
    ctr = lab.container(["true"])
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        create_container(
            CONMON, str(fake), str(lab.runtime_root), ctr.id, ctr.id, ctr.paths, timeout=1.0
        )
    assert time.monotonic() - t0 < 10
    assert conmon_pids(lab.base) == []
    assert not [p for p in _pids_with(str(fake)) if procs.is_alive(p)]


def _pids_with(needle: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if needle.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
    return out


def test_monitor_cgroup_receives_conmon(lab: Lab) -> None:
    name = uniq() + "-mon"
    lab.extra_cgroups.append(name)
    cg = CGROUP_ROOT / "pids" / name
    cg.mkdir()
    ctr = lab.container(["sleep", "100"])
    created = lab.create(ctr, cgroup_procs_path=str(cg / "cgroup.procs"))
    assert f"pids:/{name}" in Path(f"/proc/{created.monitor_pid}/cgroup").read_text()
    # The container itself is in its own cgroup, not the monitor's.
    assert f"pids:/{ctr.cgroup}" in Path(f"/proc/{created.pid}/cgroup").read_text()
    lab.start(ctr)
    stop(lab, ctr)
    assert procs.wait_gone([created.monitor_pid], 5.0)


def test_bad_monitor_cgroup_fails_cleanly(lab: Lab) -> None:
    ctr = lab.container(["sleep", "100"])
    with pytest.raises(Internal, match="cgroup"):
        lab.create(ctr, cgroup_procs_path=str(lab.base / "no-such-cgroup" / "cgroup.procs"))
    assert conmon_pids(lab.base) == []
    assert lab.runc("list", "-q").stdout.split() == []


LAUNCHER = """
import json, sys, time
from conmon.launch import create_container
from conmon.paths import MonitorPaths
a = json.loads(sys.argv[1])
c = create_container(a["conmon"], a["runc"], a["root"], a["id"], a["id"],
                     MonitorPaths(**a["paths"]), timeout=30.0)
print(json.dumps([c.pid, c.monitor_pid]), flush=True)
time.sleep(600)
"""


def test_monitor_survives_its_launcher(lab: Lab) -> None:
    ctr = lab.container(["sh", "-c", "sleep 0.3; exit 7"])
    args = {
        "conmon": CONMON,
        "runc": RUNC,
        "root": str(lab.runtime_root),
        "id": ctr.id,
        "paths": dataclasses.asdict(ctr.paths),
    }
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, json.dumps(args)],
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    lab.extra_pids.append(launcher.pid)
    try:
        assert launcher.stdout is not None
        pid, monitor = json.loads(launcher.stdout.readline())
    finally:
        launcher.kill()
        launcher.wait()
    assert procs.is_alive(monitor) and procs.is_alive(pid)
    assert procs.parent_pid(monitor) != launcher.pid
    assert os.getsid(monitor) == monitor  # its own session
    lab.start(ctr)
    assert lab.wait_exit(ctr) == 7
    assert wait_for(lambda: files.read_persisted_exit(ctr.paths.persist_dir))[0] == 7


# -- attach, ctl ---------------------------------------------------------------


def test_attach_receives_output(lab: Lab) -> None:
    ctr = lab.container(
        ["sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.05; done"]
    )
    lab.create(ctr)
    got: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
    with attach(ctr.paths.attach_path(ctr.id)) as conn:
        lab.start(ctr)
        while (packet := conn.recv(timeout=10)) is not None:
            got[packet[0]] += packet[1]
    assert got[STDOUT] == b"out1\nout2\nout3\n"
    assert got[STDERR] == b"err1\nerr2\nerr3\n"
    assert lab.wait_exit(ctr) == 0


def test_attach_stdin_and_close(lab: Lab) -> None:
    ctr = lab.container(["sh", "-c", "cat; echo done"])
    lab.create(ctr, stdin=True, stdin_once=True)
    with attach(ctr.paths.attach_path(ctr.id)) as conn:
        lab.start(ctr)
        conn.send_stdin(b"hello\n" + b"y" * 100000 + b"\n")
        conn.close_stdin()
        out = b""
        while (packet := conn.recv(timeout=10)) is not None:
            if packet[0] == STDOUT:
                out += packet[1]
    assert out == b"hello\n" + b"y" * 100000 + b"\ndone\n"
    assert lab.wait_exit(ctr) == 0


def test_attach_to_missing_socket_is_not_found(lab: Lab) -> None:
    with pytest.raises(NotFound):
        attach(str(lab.socket_dir / "nope" / "attach"))


def test_reopen_log_after_rename(lab: Lab) -> None:
    ctr = running(
        lab, ["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.05; done"]
    )
    log = Path(ctr.paths.log_path)
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 3, what="first lines")
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)
    reopen_log(ctr.paths.ctl_path, str(log))
    wait_for(lambda: log.read_bytes().count(b"\n") >= 3, what="lines in the new log")
    old = [ln.content for ln in crilog.read_log(str(rotated), strict=True)]
    new = [ln.content for ln in crilog.read_log(str(log), strict=True)]
    assert old and new
    assert int(new[0][4:]) > int(old[-1][4:])  # nothing duplicated, order kept
    assert int(new[0][4:]) == int(old[-1][4:]) + 1  # nothing lost
    stop(lab, ctr)
    with pytest.raises(FailedPrecondition):
        wait_for(lambda: not procs.is_alive(ctr.created.monitor_pid))
        reopen_log(ctr.paths.ctl_path)


def test_resize_sets_terminal_size(lab: Lab) -> None:
    ctr = lab.container(["sh", "-c", "sleep 0.5; stty size"], tty=True)
    lab.create(ctr, tty=True)
    resize(ctr.paths.ctl_path, 33, 101)
    lab.start(ctr)
    assert lab.wait_exit(ctr) == 0
    text = b"".join(m for _, m in crilog.reassemble(crilog.read_log(ctr.paths.log_path)))
    assert b"33 101" in text, text


def test_oom_kill_is_recorded(lab: Lab) -> None:
    hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    ctr = lab.container(["sh", "-c", hog])
    limit = 32 << 20
    ctr.config["linux"]["resources"] = {"memory": {"limit": limit, "swap": limit}}
    Path(ctr.paths.bundle, "config.json").write_text(json.dumps(ctr.config))
    lab.create(ctr)
    lab.start(ctr)
    assert lab.wait_exit(ctr, timeout=30) == 128 + signal.SIGKILL
    assert files.oom_killed(ctr.paths.persist_dir)
    assert Path(ctr.paths.bundle_oom_path).exists()


def test_no_oom_marker_without_oom(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    stop(lab, ctr)
    assert not files.oom_killed(ctr.paths.persist_dir)
    assert not Path(ctr.paths.bundle_oom_path).exists()


# -- exec_sync -----------------------------------------------------------------


def test_exec_sync_in_tty_container(lab: Lab) -> None:
    ctr = lab.container(["sleep", "100"], tty=True)
    lab.create(ctr, tty=True)
    lab.start(ctr)
    assert ctr.config["process"]["terminal"] is True
    r = run_exec(lab, ctr, ["sh", "-c", "echo a; echo b >&2"])
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"a\n", b"b\n")
    stop(lab, ctr)


def test_exec_sync_output_and_exit_codes(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    r = run_exec(lab, ctr, ["sh", "-c", "echo hi; echo oops >&2; exit 4"])
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (4, b"hi\n", b"oops\n", False)
    r = run_exec(lab, ctr, ["true"], timeout=None)
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"", b"")
    r = run_exec(lab, ctr, ["sh", "-c", "printf abc; kill -TERM $$"])
    assert (r.exit_code, r.stdout) == (128 + signal.SIGTERM, b"abc")
    r = run_exec(lab, ctr, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' z"], max_output=1000)
    assert r.stdout == b"z" * 1000 and r.truncated and r.exit_code == 0
    stop(lab, ctr)


def test_exec_sync_missing_binary_raises_runtime_message(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    with pytest.raises(Internal) as err:
        run_exec(lab, ctr, ["/no/such/thing"])
    assert "/no/such/thing" in err.value.message and ctr.id in err.value.message
    stop(lab, ctr)


@pytest.mark.parametrize(
    "args",
    [["sleep", "10"], ["sh", "-c", "setsid sleep 10 & sleep 10"]],
    ids=["sleep", "setsid-child"],
)
def test_exec_sync_timeout_kills_the_command(lab: Lab, args: list[str]) -> None:
    ctr = running(lab, ["sleep", "100"])
    t0 = time.monotonic()
    work = lab.base / "exec-tmp"
    work.mkdir()
    r = run_exec(lab, ctr, args, timeout=1, work_dir=str(work))
    took = time.monotonic() - t0
    assert (r.exit_code, r.stderr, r.timed_out) == (-1, b"command timed out", True)
    assert 1.0 <= took < 2.0, took
    # Only the container's init is left in its cgroup (zombies are not counted).
    cg = cgroup_dirs(ctr.cgroup)
    pids_dir = next(d for d in cg if d.parent.name == "pids")
    live = [
        int(p) for p in (pids_dir / "cgroup.procs").read_text().split() if procs.is_alive(int(p))
    ]
    assert live == [ctr.created.pid], live
    assert list(work.iterdir()) == []  # temporary files removed
    stop(lab, ctr)


def test_exec_sync_returns_when_the_command_exits_not_when_its_output_closes(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    t0 = time.monotonic()
    r = run_exec(lab, ctr, ["sh", "-c", "sleep 30 & echo started; echo err >&2"])
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"started\n", b"err\n")
    assert time.monotonic() - t0 < 10  # the background sleep still holds stdout and stderr
    stop(lab, ctr)


def test_an_answered_exec_leaves_nothing_once_its_conmon_is_reaped(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    work = lab.base / "exec-answered"
    work.mkdir()
    for _ in range(5):
        r = run_exec(lab, ctr, ["sh", "-c", "echo hi"], work_dir=str(work))
        assert (r.exit_code, r.stdout) == (0, b"hi\n")
    # Reaping conmon and deleting the scratch dir come after the answer.
    wait_for(lambda: list(work.iterdir()) == [], what="the scratch dirs to go")
    mine = [p for p in procs.descendants(os.getpid())
            if Path(f"/proc/{p}/comm").read_text().strip() == "conmon"]
    assert mine == []  # no conmon left, not even a zombie
    stop(lab, ctr)


def test_exec_sync_reads_both_streams_at_once_and_caps_them(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    script = ("head -c 300000 /dev/zero | tr '\\0' o & "
              "head -c 300000 /dev/zero | tr '\\0' e >&2; wait")
    r = run_exec(lab, ctr, ["sh", "-c", script])
    assert (r.stdout, r.stderr, r.truncated) == (b"o" * 300000, b"e" * 300000, False)
    r = run_exec(lab, ctr, ["sh", "-c", script], max_output=1000)
    # Each stream is cut at the cap; conmon's log has one cap for both (twice this one
    # plus 64 KiB), so a stream that floods first can leave the other less, even none.
    assert r.stdout == b"o" * len(r.stdout) and r.stderr == b"e" * len(r.stderr)
    assert len(r.stdout) <= 1000 and len(r.stderr) <= 1000 and r.truncated and r.exit_code == 0
    stop(lab, ctr)


def test_exec_sync_cancelled_by_its_caller_kills_the_command(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    ctx = CallContext.with_timeout(None, "exec")
    threading.Timer(0.5, ctx.cancel).start()
    work = lab.base / "exec-cancel"
    work.mkdir()
    with pytest.raises(Cancelled):
        run_exec(lab, ctr, ["sh", "-c", "setsid sleep 31 & sleep 30"], timeout=None, ctx=ctx,
                 work_dir=str(work))  # fmt: skip
    cg = cgroup_dirs(ctr.cgroup)
    pids_dir = next(d for d in cg if d.parent.name == "pids")
    live = [
        int(p) for p in (pids_dir / "cgroup.procs").read_text().split() if procs.is_alive(int(p))
    ]
    assert live == [ctr.created.pid], live
    assert list(work.iterdir()) == []
    stop(lab, ctr)


def test_exec_sync_in_stopped_container_fails(lab: Lab) -> None:
    ctr = running(lab, ["sleep", "100"])
    stop(lab, ctr)
    with pytest.raises(FailedPrecondition, match="stopped"):
        run_exec(lab, ctr, ["true"])
    lab.runc("delete", ctr.id)
    with pytest.raises(NotFound, match="does not exist"):
        run_exec(lab, ctr, ["true"])


# -- figures -------------------------------------------------------------------


def test_measure_latency_and_memory(lab: Lab) -> None:
    """Prints create latency, ExecSync latency and monitor RSS/PSS (run with -s)."""
    create_ms = []
    ctrs = []
    for _ in range(10):
        ctr = lab.container(["sleep", "100"])
        t0 = time.perf_counter()
        lab.create(ctr, log_level="info")
        create_ms.append((time.perf_counter() - t0) * 1000)
        lab.start(ctr)
        ctrs.append(ctr)
    mem = [procs.memory_usage(c.created.monitor_pid) for c in ctrs]
    assert all(mem)
    exec_ms = []
    for _ in range(30):
        t0 = time.perf_counter()
        r = run_exec(lab, ctrs[0], ["true"])
        exec_ms.append((time.perf_counter() - t0) * 1000)
        assert r.exit_code == 0
    rss = statistics.median(m.rss_kib for m in mem)  # type: ignore[union-attr]
    pss = statistics.median(m.pss_kib for m in mem)  # type: ignore[union-attr]
    print(
        f"\ncreate->pid median {statistics.median(create_ms):.1f} ms "
        f"(min {min(create_ms):.1f}, max {max(create_ms):.1f}); "
        f"exec_sync true median {statistics.median(exec_ms):.1f} ms "
        f"(min {min(exec_ms):.1f}, max {max(exec_ms):.1f}); "
        f"monitor RSS {rss} KiB, PSS {pss} KiB (median of {len(mem)})"
    )
    assert statistics.median(create_ms) < 2000
    assert statistics.median(exec_ms) < 2000
    assert pss < 10 * 1024
    for c in ctrs:
        stop(lab, c)
