"""generate_spec end to end on a small fake rootfs (no root needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from base.errors import Internal, InvalidArgument
from oci.spec.capabilities import parse_cap_mask
from oci.spec.generate import generate_spec
from oci.spec.inputs import (
    Capabilities,
    CgroupDriver,
    ContainerRequest,
    DaemonFacts,
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
from oci.spec.mounts import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from sandbox.facts import SandboxFacts

DAEMON = DaemonFacts(
    bounding_set=parse_cap_mask("000001fffeffffff"),
    swap_accounting=True,
    own_oom_score_adj=0,
    pids_limit=4096,
    nofile_hard_limit=20000,
    machine="x86_64",
)
SANDBOX = SandboxFacts(
    hostname="web-0",
    netns_path="/run/peapod/ns/net-p1",
    ipcns_path="/run/peapod/ns/ipc-p1",
    utsns_path="/run/peapod/ns/uts-p1",
    pidns_path="/proc/4242/ns/pid",
    resolv_conf_path="/run/peapod/p1/resolv.conf",
    hosts_path="/run/peapod/p1/hosts",
    hostname_path="/run/peapod/p1/hostname",
    shm_path="/run/peapod/p1/shm",
    cgroup_parent="/kubepods/besteffort/podp1",
)
IMAGE = ImageConfig(
    entrypoint=("/bin/sh", "-c"), cmd=("echo hi",), env=("PATH=/bin", "LANG=C"),
    working_dir="/srv", user="app",
)


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\n")
    return str(tmp_path)


def spec_for(rootfs: str, **kw: Any) -> dict[str, Any]:
    security = kw.pop("security", SecurityContext())
    request = ContainerRequest(id="c1", name="web", security=security, **kw)
    return generate_spec(request, IMAGE, SANDBOX, DAEMON, rootfs)


def test_defaults_exactly(rootfs: str) -> None:
    spec = spec_for(rootfs, annotations={"a": "b"})
    assert spec["ociVersion"] == "1.0.2"
    assert spec["hostname"] == "web-0"
    assert spec["root"] == {"path": rootfs, "readonly": False}
    assert spec["annotations"] == {"a": "b"}
    assert spec["process"] == {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]},
        "args": ["/bin/sh", "-c", "echo hi"],
        "env": ["PATH=/bin", "LANG=C", "HOSTNAME=web-0", "HOME=/home/app"],
        "cwd": "/srv",
        "capabilities": {
            "bounding": [
                "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
            ],
            "effective": spec["process"]["capabilities"]["bounding"],
            "permitted": spec["process"]["capabilities"]["bounding"],
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}],
        "noNewPrivileges": False,
        "oomScoreAdj": 0,
    }
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/kubepods/besteffort/podp1/c1"
    assert linux["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}],
        "pids": {"limit": 4096},
    }
    assert linux["namespaces"] == [
        {"type": "mount"},
        {"type": "network", "path": "/run/peapod/ns/net-p1"},
        {"type": "uts", "path": "/run/peapod/ns/uts-p1"},
        {"type": "ipc", "path": "/run/peapod/ns/ipc-p1"},
        {"type": "pid", "path": "/proc/4242/ns/pid"},
    ]
    assert linux["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert linux["readonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    assert linux["rootfsPropagation"] == "rprivate"
    assert linux["devices"] == []
    assert "seccomp" not in linux  # no profile requested means unconfined, as in the CRI
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc", "/dev", "/sys", "/dev/pts", "/dev/mqueue", "/dev/shm", "/etc/hostname",
        "/etc/resolv.conf", "/etc/hosts", "/sys/fs/cgroup",
    ]
    shm = next(m for m in spec["mounts"] if m["destination"] == "/dev/shm")
    assert shm["source"] == "/run/peapod/p1/shm"


def test_request_overrides(rootfs: str, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    spec = spec_for(
        rootfs,
        command=("/app",),
        args=("--port", "80"),
        working_dir="/work",
        envs=(("LANG", "de"), ("X", "1")),
        tty=True,
        mounts=(
            Mount("/etc/hosts", str(tmp_path / "hosts"), readonly=True),
            Mount("/data", str(vol)),
        ),
        resources=Resources(memory_limit_in_bytes=1 << 30, oom_score_adj=-997, cpu_shares=2),
        security=SecurityContext(
            run_as_user=0,
            readonly_rootfs=True,
            no_new_privs=True,
            capabilities=Capabilities(add=("NET_ADMIN", "SYS_RESOURCE"), drop=("KILL",)),
            masked_paths=("/proc/cpuinfo",),
            readonly_paths=(),
            namespace_options=NamespaceOptions(pid=NamespaceMode.CONTAINER),
        ),
    )
    process = spec["process"]
    assert process["args"] == ["/app", "--port", "80"]
    assert process["cwd"] == "/work"
    assert process["env"] == [
        "PATH=/bin", "LANG=de", "HOSTNAME=web-0", "X=1", "HOME=/root", "TERM=xterm",
    ]
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert process["terminal"] is True and process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == 0  # -997 is below what peapod itself may set
    assert "CAP_NET_ADMIN" in process["capabilities"]["bounding"]
    assert "CAP_KILL" not in process["capabilities"]["bounding"]
    assert "CAP_SYS_RESOURCE" not in process["capabilities"]["bounding"]
    assert spec["root"]["readonly"] is True
    assert spec["linux"]["maskedPaths"] == ["/proc/cpuinfo"]
    assert spec["linux"]["readonlyPaths"] == []
    assert spec["linux"]["namespaces"][-1] == {"type": "pid"}
    assert spec["linux"]["resources"]["memory"] == {"limit": 1 << 30, "swap": 1 << 30}
    hosts = [m for m in spec["mounts"] if m["destination"] == "/etc/hosts"]
    assert hosts == [{"destination": "/etc/hosts", "type": "bind",
                      "source": str(tmp_path / "hosts"), "options": ["rbind", "rprivate", "ro"]}]
    hostname = next(m for m in spec["mounts"] if m["destination"] == "/etc/hostname")
    assert hostname["options"][-1] == "ro"
    assert vol.is_dir()


def test_privileged(rootfs: str) -> None:
    spec = spec_for(rootfs, security=SecurityContext(
        privileged=True, seccomp=SeccompProfile(SeccompProfileType.RUNTIME_DEFAULT),
        masked_paths=("/proc/kcore",),
    ))
    linux = spec["linux"]
    assert set(spec["process"]["capabilities"]["bounding"]) == DAEMON.bounding_set
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in linux["devices"])
    sys_mounts = {m["destination"]: m["options"][-1] for m in spec["mounts"]
                  if m["destination"].startswith("/sys")}
    assert sys_mounts == {"/sys": "rw", "/sys/fs/cgroup": "rw"}


def test_runtime_default_seccomp_follows_caps(rootfs: str) -> None:
    def allowed(spec: dict[str, Any]) -> set[str]:
        return {n for r in spec["linux"]["seccomp"]["syscalls"]
                if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}

    default = SeccompProfile(SeccompProfileType.RUNTIME_DEFAULT)
    plain = spec_for(rootfs, security=SecurityContext(seccomp=default))
    admin = spec_for(rootfs, security=SecurityContext(
        seccomp=default, capabilities=Capabilities(add=("SYS_ADMIN",))))
    assert "sethostname" not in allowed(plain)
    assert "sethostname" in allowed(admin)


def test_host_network_pod_has_no_hostname_or_uts(rootfs: str) -> None:
    sandbox = replace(SANDBOX, host_network=True, host_ipc=True, host_pid=True)
    request = ContainerRequest(id="c1", name="web")
    spec = generate_spec(request, IMAGE, sandbox, DAEMON, rootfs)
    assert "hostname" not in spec
    assert spec["linux"]["namespaces"] == [{"type": "mount"}]
    shm = next(m for m in spec["mounts"] if m["destination"] == "/dev/shm")
    assert shm["source"] == "/dev/shm"


def test_systemd_driver_and_swapless_node(rootfs: str) -> None:
    daemon = replace(DAEMON, cgroup_driver=CgroupDriver.SYSTEMD, swap_accounting=False)
    sandbox = replace(SANDBOX, cgroup_parent="kubepods-besteffort-podp1.slice")
    request = ContainerRequest(id="c1", name="web",
                               resources=Resources(memory_limit_in_bytes=4096))
    spec = generate_spec(request, IMAGE, sandbox, daemon, rootfs)
    assert spec["linux"]["cgroupsPath"] == "kubepods-besteffort-podp1.slice:peapod:c1"
    assert spec["linux"]["resources"]["memory"] == {"limit": 4096}


def test_bidirectional_mount_sets_rshared_after_host_check(
    rootfs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = tmp_path / "shared-vol"
    vol.mkdir()
    mountinfo = f"1 0 0:1 / / rw - ext4 /dev/x rw\n2 1 0:2 / {vol} rw shared:1 - tmpfs t rw\n"
    monkeypatch.setattr("oci.spec.mounts._read_mountinfo", lambda: mountinfo)
    mount = Mount("/shared", str(vol), propagation=MountPropagation.BIDIRECTIONAL)
    spec = spec_for(rootfs, mounts=(mount,))
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    monkeypatch.setattr("oci.spec.mounts._read_mountinfo", lambda: mountinfo.replace(
        "shared:1", "master:3"))
    with pytest.raises(InvalidArgument, match="bidirectional"):
        spec_for(rootfs, mounts=(mount,))


def test_errors(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="run_as_group"):
        spec_for(rootfs, security=SecurityContext(run_as_group=5))
    with pytest.raises(InvalidArgument, match="no command specified"):
        generate_spec(ContainerRequest(id="c1", name="x"), ImageConfig(), SANDBOX, DAEMON,
                      rootfs)
    with pytest.raises(Internal):
        generate_spec(ContainerRequest(id="c1", name="x"), IMAGE, SANDBOX, DAEMON, "rel")
