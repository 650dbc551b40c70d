"""Generated OCI specs run under the real runc, and the container sees what they promise.

Each test builds a busybox rootfs in a temporary directory and runs its container in
new network, IPC, UTS and PID namespaces, so nothing depends on a pod sandbox. runc
keeps its state under the test's directory; teardown force-deletes every container,
removes the cgroups runc made (including the test's cgroup parent), unmounts what
the test mounted and deletes the directory, even when the test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from oci.spec.capabilities import CAPABILITY_NUMBERS, read_bounding_set
from oci.spec.generate import generate_spec, process_for_exec
from oci.spec.inputs import (
    Capabilities,
    ContainerRequest,
    DaemonFacts,
    Device,
    ImageConfig,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    Resources,
    SeccompProfile,
    SeccompProfileType,
    SecurityContext,
)
from sandbox.facts import SandboxFacts

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT = SeccompProfile(SeccompProfileType.RUNTIME_DEFAULT)
UNCONFINED = SeccompProfile(SeccompProfileType.UNCONFINED)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (os.access(RUNC, os.X_OK) and os.access(BUSYBOX, os.X_OK)),
    reason="needs root, runc and busybox",
)


def build_rootfs(root: Path) -> None:
    """Static busybox with a hard link per applet, and a few users and groups."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in applets:
        if name != "busybox":
            os.link(root / "bin" / "busybox", root / "bin" / name)
    for d in ("proc", "sys", "dev", "tmp", "etc", "home/alice"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text(
        "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n"
    )


@dataclass
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Runner:
    """Generates specs into bundles under ``base`` and runs them with runc."""

    base: Path
    rootfs: Path
    daemon: DaemonFacts
    sandbox: SandboxFacts
    containers: list[str] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)

    def runc(self, *args: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNC, "--root", str(self.base / "state"), *args],
            text=True, timeout=timeout, **kw,
        )

    def spec(self, command: str, *, image: ImageConfig | None = None, **kw: Any) -> dict[str, Any]:
        security: SecurityContext = kw.pop("security", SecurityContext())
        if security.namespace_options.pid is NamespaceMode.POD:
            security = replace(security, namespace_options=NamespaceOptions(
                pid=NamespaceMode.CONTAINER))
        cid = "pp-spec-" + secrets.token_hex(5)
        request = ContainerRequest(
            id=cid, name="t", command=("sh", "-c", command), security=security, **kw
        )
        return generate_spec(request, image or ImageConfig(), self.sandbox, self.daemon,
                             str(self.rootfs))

    def _bundle(self, spec: dict[str, Any]) -> tuple[str, Path]:
        cid = spec["linux"]["cgroupsPath"].rsplit("/", 1)[-1]
        bundle = self.base / "bundles" / cid
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(spec))
        self.containers.append(cid)
        return cid, bundle

    def run(self, spec: dict[str, Any]) -> Result:
        """Run to completion in the foreground; stdout and stderr captured."""
        cid, bundle = self._bundle(spec)
        done = self.runc("run", "--bundle", str(bundle), cid, capture_output=True,
                         stdin=subprocess.DEVNULL)
        self.runc("delete", "--force", cid, capture_output=True)
        return Result(done.returncode, done.stdout, done.stderr)

    def start(self, spec: dict[str, Any]) -> str:
        """Run detached; returns the container id."""
        cid, bundle = self._bundle(spec)
        # The container inherits these descriptors: a pipe would never reach EOF.
        with open(bundle / "stderr", "w+") as err:
            done = self.runc("run", "--detach", "--bundle", str(bundle), cid,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            err.seek(0)
            assert done.returncode == 0, err.read()
        return cid

    def exec(self, cid: str, spec: dict[str, Any], argv: list[str]) -> Result:
        process = self.base / f"exec-{secrets.token_hex(4)}.json"
        process.write_text(json.dumps(process_for_exec(spec, argv, tty=False)))
        done = self.runc("exec", "--process", str(process), cid, capture_output=True,
                         stdin=subprocess.DEVNULL)
        return Result(done.returncode, done.stdout, done.stderr)

    def cleanup(self) -> None:
        for cid in self.containers:
            self.runc("delete", "--force", cid, capture_output=True)
        parent = self.sandbox.cgroup_parent.strip("/")
        for hierarchy in CGROUP_ROOT.iterdir():
            top = hierarchy / parent
            if not top.is_dir() or top.is_symlink():
                continue
            for cid in self.containers:
                if (top / cid).is_dir():
                    os.rmdir(top / cid)
            os.rmdir(top)
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    rootfs = tmp_path / "rootfs"
    build_rootfs(rootfs)
    pod = tmp_path / "pod"
    pod.mkdir()
    (pod / "hostname").write_text("pp-spec\n")
    (pod / "hosts").write_text("127.0.0.1 localhost\n10.1.2.3 pp-spec\n")
    (pod / "resolv.conf").write_text("nameserver 10.0.0.10\n")
    sandbox = SandboxFacts(
        hostname="pp-spec",
        hostname_path=str(pod / "hostname"),
        hosts_path=str(pod / "hosts"),
        resolv_conf_path=str(pod / "resolv.conf"),
        cgroup_parent="/pp-spec-" + secrets.token_hex(4),
    )
    r = Runner(tmp_path, rootfs, DaemonFacts.detect(pids_limit=512), sandbox)
    try:
        yield r
    finally:
        r.cleanup()


def cap_mask(names: list[str] | set[str] | frozenset[str]) -> str:
    return f"{sum(1 << CAPABILITY_NUMBERS[n] for n in names):016x}"


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def test_user_groups_env_and_pod_files(runner: Runner) -> None:
    spec = runner.spec(
        "id -u; id -g; id -G; echo $HOME $HOSTNAME; hostname; cat /etc/hosts /etc/resolv.conf; pwd",
        security=SecurityContext(run_as_username="alice", supplemental_groups=(1234,)),
        working_dir="/home/alice",
    )
    got = runner.run(spec)
    assert got.rc == 0, got.err
    lines = got.out.splitlines()
    assert lines[0:2] == ["1000", "1000"]
    assert sorted(lines[2].split()) == ["1000", "1234", "50"]
    assert lines[3:5] == ["/home/alice pp-spec", "pp-spec"]
    assert "10.1.2.3 pp-spec" in lines and "nameserver 10.0.0.10" in lines
    assert lines[-1] == "/home/alice"


def test_run_as_user_and_group(runner: Runner) -> None:
    spec = runner.spec("echo $(id -u):$(id -g)",
                       security=SecurityContext(run_as_user=1001, run_as_group=1002))
    got = runner.run(spec)
    assert (got.rc, got.out) == (0, "1001:1002\n"), got.err


def test_readonly_rootfs(runner: Runner) -> None:
    cmd = "touch /probe && echo Found"
    got = runner.run(runner.spec(cmd, security=SecurityContext(readonly_rootfs=True)))
    assert got.rc != 0
    assert "touch: /probe: Read-only file system" in got.err
    got = runner.run(runner.spec(cmd))
    assert (got.rc, got.out) == (0, "Found\n"), got.err


def test_capabilities(runner: Runner) -> None:
    cmd = "grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status"
    bounding = read_bounding_set()

    def caps(security: SecurityContext) -> dict[str, str]:
        got = runner.run(runner.spec(cmd, security=security))
        assert got.rc == 0, got.err
        return {k: status_field(got.out, k) for k in ("CapEff", "CapBnd", "CapInh", "CapAmb")}

    defaults = caps(SecurityContext())
    assert defaults["CapEff"] == defaults["CapBnd"] == cap_mask(runner.daemon.default_capabilities)
    assert defaults["CapInh"] == defaults["CapAmb"] == "0" * 16
    added = caps(SecurityContext(capabilities=Capabilities(add=("net_admin",), drop=("KILL",))))
    expected = set(runner.daemon.default_capabilities) | {"CAP_NET_ADMIN"}
    assert added["CapEff"] == cap_mask(expected - {"CAP_KILL"})
    assert caps(SecurityContext(capabilities=Capabilities(drop=("ALL",))))["CapBnd"] == "0" * 16
    everything = caps(SecurityContext(capabilities=Capabilities(add=("ALL",))))
    assert everything["CapEff"] == cap_mask(bounding)
    privileged = caps(SecurityContext(privileged=True))
    assert privileged["CapEff"] == cap_mask(bounding)


def test_seccomp_runtime_default_blocks_and_follows_caps(runner: Runner) -> None:
    cmd = "grep '^Seccomp:' /proc/self/status; hostname renamed && hostname"
    sys_admin = Capabilities(add=("SYS_ADMIN",))

    blocked = runner.run(runner.spec(cmd, security=SecurityContext(seccomp=DEFAULT)))
    assert blocked.rc != 0
    assert "Seccomp:\t2" in blocked.out
    assert "Operation not permitted" in blocked.err

    # With SYS_ADMIN the default profile lets sethostname through, as critest expects.
    admin = runner.run(runner.spec(cmd, security=SecurityContext(seccomp=DEFAULT,
                                                                capabilities=sys_admin)))
    assert (admin.rc, admin.out) == (0, "Seccomp:\t2\nrenamed\n"), admin.err

    free = runner.run(runner.spec(cmd, security=SecurityContext(seccomp=UNCONFINED,
                                                               capabilities=sys_admin)))
    assert (free.rc, free.out) == (0, "Seccomp:\t0\nrenamed\n"), free.err


def test_seccomp_default_blocks_what_caps_would_allow(runner: Runner) -> None:
    # A user namespace needs no capability, so only the filter can refuse it.
    cmd = "unshare -U true && echo created"
    unconfined = runner.run(runner.spec(cmd, security=SecurityContext(seccomp=UNCONFINED)))
    assert (unconfined.rc, unconfined.out) == (0, "created\n"), unconfined.err
    confined = runner.run(runner.spec(cmd, security=SecurityContext(seccomp=DEFAULT)))
    assert confined.rc != 0 and "Operation not permitted" in confined.err


def test_seccomp_localhost_profile_beats_sys_admin(runner: Runner) -> None:
    profile = runner.base / "block-hostname.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}],
    }))
    security = SecurityContext(
        capabilities=Capabilities(add=("SYS_ADMIN",)),
        seccomp=SeccompProfile(SeccompProfileType.LOCALHOST, str(profile)),
    )
    got = runner.run(runner.spec("hostname renamed", security=security))
    assert got.rc != 0 and "Operation not permitted" in got.err
    privileged = replace(security, privileged=True)  # privileged ignores the profile
    got = runner.run(runner.spec("hostname renamed && hostname", security=privileged))
    assert (got.rc, got.out) == (0, "renamed\n"), got.err


def test_masked_and_readonly_paths(runner: Runner) -> None:
    got = runner.run(runner.spec("stat -c %F /proc/keys; ls -A /sys/firmware | wc -l; "
                                 "echo 1 > /proc/sys/kernel/domainname"))
    lines = got.out.splitlines()
    assert lines[:2] == ["character special file", "0"]
    assert got.rc != 0 and "Read-only file system" in got.err

    (runner.rootfs / "etc" / "secret").write_text("s3cret\n")
    custom = SecurityContext(masked_paths=("/etc/secret",), readonly_paths=("/tmp",))
    got = runner.run(runner.spec("cat /etc/secret; stat -c %F /etc/secret; touch /tmp/test",
                                 security=custom))
    assert got.out == "character special file\n"
    assert "touch: /tmp/test: Read-only file system" in got.err

    privileged = runner.run(runner.spec("stat -c %F /proc/keys",
                                        security=SecurityContext(privileged=True)))
    assert privileged.out == "regular empty file\n", privileged.err


def test_no_new_privs_limits_and_oom_score(runner: Runner) -> None:
    if runner.daemon.cgroup_v2:
        files = "memory.max pids.max memory.swap.max"
        no_swap = "0"  # memory+swap equal to memory: no swap at all
    else:
        files = "memory/memory.limit_in_bytes pids/pids.max memory/memory.memsw.limit_in_bytes"
        no_swap = str(64 << 20)
    cmd = ("grep '^NoNewPrivs:' /proc/self/status; ulimit -n; cat /proc/self/oom_score_adj; "
           f"cd /sys/fs/cgroup; for f in {files}; do cat $f 2>/dev/null || echo none; done")
    with open("/proc/self/oom_score_adj", encoding="ascii") as f:
        own = int(f.read())
    spec = runner.spec(
        cmd,
        security=SecurityContext(no_new_privs=True),
        resources=Resources(memory_limit_in_bytes=64 << 20, oom_score_adj=-999),
    )
    got = runner.run(spec)
    assert got.rc == 0, got.err
    expected_nofile = spec["process"]["rlimits"][0]["soft"]
    assert got.out.splitlines() == [
        "NoNewPrivs:\t1", str(expected_nofile), str(max(-999, own)), str(64 << 20), "512",
        no_swap if runner.daemon.swap_accounting else "none",
    ]
    assert spec["process"]["oomScoreAdj"] == max(-999, own) or "CAP_SYS_RESOURCE" in (
        runner.daemon.bounding_set)


def test_devices(runner: Runner) -> None:
    spec = runner.spec("stat -c '%F %t:%T' /dev/mynull; echo hi > /dev/mynull && echo wrote",
                       devices=(Device("/dev/mynull", "/dev/null", "rw"),))
    got = runner.run(spec)
    assert (got.rc, got.out) == (0, "character special file 1:3\nwrote\n"), got.err


def test_bind_mounts_ro_rro_and_missing_source(runner: Runner) -> None:
    vol = runner.base / "vol"
    (vol / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(vol / "sub")], check=True)
    runner.mounts.append(vol / "sub")
    created = runner.base / "made" / "by" / "peapod"
    mounts = (
        Mount("/ro", str(vol), readonly=True),
        Mount("/rro", str(vol), readonly=True, recursive_read_only=True),
        Mount("/new", str(created)),
    )
    cmd = ("touch /ro/x || echo ro-blocked; touch /ro/sub/x && echo ro-sub-writable; "
           "touch /rro/sub/y || echo rro-blocked; touch /new/z && echo new-writable")
    got = runner.run(runner.spec(cmd, mounts=mounts))
    assert got.out.splitlines() == ["ro-blocked", "ro-sub-writable", "rro-blocked",
                                    "new-writable"], got.err
    assert (created / "z").is_file()


def test_host_to_container_propagation_reaches_running_container(runner: Runner) -> None:
    src = runner.base / "shared"
    src.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src)], check=True)
    runner.mounts.append(src)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    spec = runner.spec("sleep 60", mounts=(
        Mount("/vol", str(src), propagation=MountPropagation.HOST_TO_CONTAINER),))
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    cid = runner.start(spec)
    (src / "later").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "later")], check=True)
    runner.mounts.append(src / "later")
    (src / "later" / "marker").write_text("propagated\n")
    got = runner.exec(cid, spec, ["cat", "/vol/later/marker"])
    assert (got.rc, got.out) == (0, "propagated\n"), got.err


def test_bidirectional_propagation_reaches_host(runner: Runner) -> None:
    src = runner.base / "shared-rw"
    src.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src)], check=True)
    runner.mounts.append(src)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    (src / "inner").mkdir()
    runner.mounts.append(src / "inner")  # the container's mount lands here on the host
    security = SecurityContext(capabilities=Capabilities(add=("SYS_ADMIN",)), seccomp=DEFAULT)
    spec = runner.spec(
        "mount -t tmpfs tmpfs /vol/inner && echo from-container > /vol/inner/marker",
        security=security,
        mounts=(Mount("/vol", str(src), propagation=MountPropagation.BIDIRECTIONAL),),
    )
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    got = runner.run(spec)
    assert got.rc == 0, got.err
    assert (src / "inner" / "marker").read_text() == "from-container\n"


def test_exec_process_keeps_user_and_filter(runner: Runner) -> None:
    spec = runner.spec("sleep 60", security=SecurityContext(run_as_user=1000, seccomp=DEFAULT))
    cid = runner.start(spec)
    got = runner.exec(cid, spec, ["sh", "-c", "id -u; grep '^Seccomp:' /proc/self/status"])
    assert (got.rc, got.out) == (0, "1000\nSeccomp:\t2\n"), got.err
