"""Bad requests over the real socket: each gets a client error code, fast, and leaves nothing.

One daemon serves the module, with a loopback-only CNI network and the busybox image.
Every test ends with all pods removed; the module checks that no container, mount,
conmon, runtime state or container directory is left, and that nothing was written
outside the test's directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.daemon import Peapod, registries_conf_text
from support.daemon_leftovers import DaemonLeftovers
from support.images import push_busybox
from support.registry import Registry

from api import api_pb2 as pb

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"
PLUGIN_DIR = "/usr/lib/cni"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_MESSAGE = 400  # no error message of a bad request is longer than this


class Env(DaemonLeftovers):
    """The module's daemon, its directories and the checks on what it leaves."""

    def __init__(self, registry: Registry) -> None:
        self.tag = secrets.token_hex(3)
        self.base = Path(tempfile.mkdtemp(prefix="peapod-bad-"))
        self.cgroup_parent = f"peapod-bad-{self.tag}"
        self.logs = self.base / "logs"
        net = self.base / "net.d"
        for d in (self.logs, net):
            d.mkdir()
        (net / "10-lo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": f"pp-bad-{self.tag}",
            "plugins": [{"type": "loopback"}],
        }))  # fmt: skip
        self.runc_root = self.base / "run" / "runtimes" / "runc"
        self.peapod = Peapod(
            self.base,
            registries_conf=registries_conf_text([registry.host]),
            config={
                "network": {"network_dir": str(net), "plugin_dirs": [PLUGIN_DIR]},
                "sandbox": {"default_cgroup_parent": self.cgroup_parent},
                "runtime": {"runtimes": {"runc": {"runtime_path": RUNC}}},
            },
        )
        self.image = ""

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    def pod_config(self, **kw: Any) -> pb.PodSandboxConfig:
        uid = secrets.token_hex(6)
        kw.setdefault("log_directory", str(self.logs / uid))
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="test"), **kw
        )
        cfg.linux.security_context.namespace_options.network = pb.NODE
        return cfg

    def run_pod(self, cfg: pb.PodSandboxConfig, timeout: float = 60) -> str:
        req = pb.RunPodSandboxRequest(config=cfg)
        return str(self.rt.RunPodSandbox(req, timeout=timeout).pod_sandbox_id)

    def pod(self) -> str:
        return self.run_pod(self.pod_config())

    def container_config(self, command: list[str] | None = None, **kw: Any) -> pb.ContainerConfig:
        kw.setdefault("metadata", pb.ContainerMetadata(name="c"))
        kw.setdefault("log_path", "c/0.log")
        return pb.ContainerConfig(
            image=pb.ImageSpec(image=self.image),
            command=command if command is not None else ["sleep", "1000"],
            **kw,
        )

    def create(self, pod: str, cfg: pb.ContainerConfig, timeout: float = 60) -> str:
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)
        return str(self.rt.CreateContainer(req, timeout=timeout).container_id)

    def running(self, pod: str) -> str:
        ctr = self.create(pod, self.container_config())
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
        return ctr

    def containers(self) -> list[pb.Container]:
        return list(self.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers)

    def pods(self) -> list[pb.PodSandbox]:
        return list(self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)

    def remove_all(self) -> None:
        for item in self.pods():
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id),
                                     timeout=60)  # fmt: skip

    # ---- what is left on the host --------------------------------------
    def runtime_roots(self) -> list[Path]:
        return [self.runc_root]

    def leftovers(self) -> dict[str, list[Any]]:
        runtime = [p.name for p in self.runc_root.iterdir()] if self.runc_root.is_dir() else []
        found = {
            "mounts": self.mounts(),
            "processes": self.our_processes(),
            "runtime state": runtime,
            "container dirs": self.container_dirs(),
        }
        return {k: v for k, v in found.items() if v}

@pytest.fixture(scope="module")
def env(registry: Registry) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (mounts, cgroups, namespaces)")
    e = Env(registry)
    try:
        e.image = push_busybox(registry.host, repo="busybox-bad").ref
        e.peapod.start()
        e.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=e.image)),
                                  timeout=60)  # fmt: skip
        yield e
    finally:
        e.sweep()


@pytest.fixture(autouse=True)
def clean(env: Env) -> Iterator[None]:
    """Each test ends with every pod removed and nothing of its containers left."""
    yield
    if env.peapod.proc is None or env.peapod.proc.poll() is not None:
        env.peapod.stop()
        env.peapod.start()  # the test failed at teardown: the daemon had died
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}


def refused(call: Callable[[], Any], code: grpc.StatusCode = INVALID,
            *words: str) -> str:  # fmt: skip
    """Run ``call``; assert it fails with ``code`` and a short message holding ``words``."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    details = err.value.details() or ""
    assert err.value.code() == code, details[:500]
    assert len(details) <= MAX_MESSAGE, details[:500]
    for word in words:
        assert word in details, details
    return details


# ---- log paths -------------------------------------------------------------------


def test_log_path_outside_the_pod_log_directory_is_refused(env: Env) -> None:
    pod = env.pod()
    escape = env.base / "escape"
    for log_path in ("../../escape/x.log", "c/../../../escape/x.log", str(escape / "y.log")):
        cfg = env.container_config(log_path=log_path)
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID, "log_path")
        assert not escape.exists()
    assert env.containers() == []


# ---- DNS, host IPs and control characters that reach files ------------------------


@pytest.mark.parametrize("server", [
    "fe80::1%eth0\nnameserver 6.6.6.6",
    "fe80::1%",
    "10.0.0.1%eth0",
    "fe80::1%eth0 options ndots:0",
])  # fmt: skip
def test_dns_server_zones_cannot_inject_lines(env: Env, server: str) -> None:
    cfg = env.pod_config(dns_config=pb.DNSConfig(servers=[server]))
    refused(lambda: env.run_pod(cfg), INVALID, "DNS server")
    assert env.pods() == []


def test_host_ip_with_a_zone_is_refused(env: Env) -> None:
    cfg = env.pod_config(port_mappings=[pb.PortMapping(
        protocol=pb.TCP, container_port=80, host_port=18080, host_ip="fe80::1%eth0")])
    refused(lambda: env.run_pod(cfg), INVALID, "host_ip")
    assert env.pods() == []


@pytest.mark.parametrize("field,value", [
    ("search", "example.com\nnameserver 6.6.6.6"),
    ("option", "ndots:5\nnameserver 6.6.6.6"),
    ("hostname", "web\n127.0.0.1 evil"),
    ("sysctl", "1\n"),
    ("sysctl", "1" * (1 << 20)),
])  # fmt: skip
def test_pod_strings_that_reach_files_are_checked(env: Env, field: str, value: str) -> None:
    cfg = env.pod_config()
    if field == "search":
        cfg.dns_config.searches.append(value)
    elif field == "option":
        cfg.dns_config.options.append(value)
    elif field == "hostname":
        cfg.hostname = value
        cfg.linux.security_context.namespace_options.network = pb.POD
    else:
        cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = value
        cfg.linux.security_context.namespace_options.network = pb.POD
    refused(lambda: env.run_pod(cfg), INVALID)
    assert env.pods() == []


# ---- seccomp profiles -------------------------------------------------------------


def localhost_seccomp(path: str) -> pb.LinuxContainerConfig:
    linux = pb.LinuxContainerConfig()
    linux.security_context.seccomp.profile_type = pb.SecurityProfile.Localhost
    linux.security_context.seccomp.localhost_ref = path
    return linux


def test_seccomp_profile_from_a_fifo_fails_at_once_and_holds_no_lock(env: Env) -> None:
    pod = env.pod()
    fifo = env.base / "profile.fifo"
    os.mkfifo(fifo)
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            env.create(pod, env.container_config(linux=localhost_seccomp(str(fifo))), timeout=8)
        except grpc.RpcError as exc:
            outcome["code"] = exc.code()

    worker = threading.Thread(target=create)
    worker.start()
    try:
        time.sleep(0.5)
        start = time.monotonic()
        env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=2)
        assert time.monotonic() - start < 2
        worker.join(10)
        assert outcome.get("code") == INVALID
    finally:
        # Release a daemon thread blocked in open() on the FIFO (the defect), if any.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        fifo.unlink()


def test_seccomp_profile_must_be_a_small_regular_file(env: Env) -> None:
    pod = env.pod()
    big = env.base / "big-profile.json"
    big.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "pad": "x" * (2 << 20)}))
    try:
        for path in ("/dev/zero", str(big), str(env.base)):
            cfg = env.container_config(linux=localhost_seccomp(path))
            refused(lambda cfg=cfg: env.create(pod, cfg, timeout=10), INVALID, "seccomp")
    finally:
        big.unlink()


# ---- what the kernel cannot exec ----------------------------------------------------


def test_arguments_the_kernel_cannot_exec_are_refused_up_front(env: Env) -> None:
    pod = env.pod()
    huge_arg = ["echo", "x" * (128 << 10)]
    many = ["echo", *(["y" * (100 << 10)] * 40)]  # 4 MB in total
    huge_env = [pb.KeyValue(key="BIG", value=b"z" * (128 << 10))]
    for cfg in (env.container_config(huge_arg), env.container_config(many),
                env.container_config(envs=huge_env)):  # fmt: skip
        start = time.monotonic()
        refused(lambda cfg=cfg: env.create(pod, cfg, timeout=20), INVALID)
        assert time.monotonic() - start < 5
    ctr = env.running(pod)
    for cmd in (huge_arg, many):
        req = pb.ExecSyncRequest(container_id=ctr, cmd=cmd)
        refused(lambda req=req: env.rt.ExecSync(req, timeout=20), INVALID)


def test_exec_sync_timeout_is_bounded(env: Env) -> None:
    ctr = env.running(env.pod())
    req = pb.ExecSyncRequest(container_id=ctr, cmd=["true"], timeout=2**31)
    refused(lambda: env.rt.ExecSync(req, timeout=20), INVALID, "timeout")
    ok = env.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["true"], timeout=2**20),
                         timeout=20)  # fmt: skip
    assert ok.exit_code == 0


# ---- enums, NUL bytes, lengths ----------------------------------------------------


def test_pod_enum_out_of_range_is_invalid(env: Env) -> None:
    for field in ("network", "pid", "ipc"):
        cfg = env.pod_config()
        setattr(cfg.linux.security_context.namespace_options, field, 99)
        refused(lambda cfg=cfg: env.run_pod(cfg), INVALID, field)
    cfg = env.pod_config(port_mappings=[pb.PortMapping(protocol=99, container_port=80)])
    refused(lambda: env.run_pod(cfg), INVALID)
    assert env.pods() == []


def test_container_enums_out_of_range_are_invalid(env: Env) -> None:
    pod = env.pod()
    changes: list[Callable[[pb.ContainerConfig], None]] = [
        lambda c: setattr(c.linux.security_context.namespace_options, "network", 99),
        lambda c: setattr(c.linux.security_context.namespace_options, "pid", 99),
        lambda c: setattr(c.linux.security_context.namespace_options, "ipc", 99),
        lambda c: setattr(c.linux.security_context.namespace_options, "ipc", pb.TARGET),
        lambda c: setattr(c.linux.security_context.namespace_options, "network", pb.TARGET),
        lambda c: setattr(c.linux.security_context.seccomp, "profile_type", 99),
        lambda c: setattr(c.linux.security_context, "supplemental_groups_policy", 99),
        lambda c: c.mounts.append(pb.Mount(container_path="/data", host_path=str(env.logs),
                                           propagation=99)),
        lambda c: setattr(c, "stop_signal", 999),
    ]
    for change in changes:
        cfg = env.container_config()
        change(cfg)
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID)
    assert env.containers() == []


def test_nul_bytes_are_refused_not_truncated(env: Env) -> None:
    pod = env.pod()
    changes: list[Callable[[pb.ContainerConfig], None]] = [
        lambda c: setattr(c.metadata, "name", "c\0x"),
        lambda c: c.command.__setitem__(0, "sleep\0x"),
        lambda c: c.args.append("1\0000"),
        lambda c: c.envs.append(pb.KeyValue(key="A", value=b"b\0c")),
        lambda c: c.envs.append(pb.KeyValue(key="A\0B", value=b"c")),
        lambda c: setattr(c, "working_dir", "/tmp\0x"),
        lambda c: setattr(c, "log_path", "c/0\0.log"),
        lambda c: c.mounts.append(pb.Mount(container_path="/data\0x", host_path=str(env.logs))),
        lambda c: c.mounts.append(pb.Mount(container_path="/data", host_path=f"{env.logs}\0x")),
        lambda c: c.labels.__setitem__("a\0b", "c"),
        lambda c: c.annotations.__setitem__("a", "b\0c"),
    ]
    for change in changes:
        cfg = env.container_config()
        change(cfg)
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID)
    ctr = env.running(pod)
    req = pb.ExecSyncRequest(container_id=ctr, cmd=["echo", "a\0b"])
    refused(lambda: env.rt.ExecSync(req, timeout=20), INVALID)
    for cfg in (env.pod_config(log_directory=f"{env.logs}/x\0y"),
                env.pod_config(annotations={"a": "b\0c"})):  # fmt: skip
        refused(lambda cfg=cfg: env.run_pod(cfg), INVALID)
    assert [c.id for c in env.containers()] == [ctr]


def test_oversized_inputs_get_short_client_errors(env: Env) -> None:
    huge = "a" * (1 << 20)
    cfg = env.pod_config(log_directory="/" + "d" * (1 << 20))
    refused(lambda: env.run_pod(cfg), INVALID, "log_directory")
    status = pb.ContainerStatusRequest(container_id=huge)
    refused(lambda: env.rt.ContainerStatus(status, timeout=10), grpc.StatusCode.NOT_FOUND)
    pod_status = pb.PodSandboxStatusRequest(pod_sandbox_id=huge)
    refused(lambda: env.rt.PodSandboxStatus(pod_status, timeout=10), grpc.StatusCode.NOT_FOUND)
    pull = pb.PullImageRequest(image=pb.ImageSpec(image="127.0.0.1:5000/" + huge))
    refused(lambda: env.peapod.images.PullImage(pull, timeout=10), INVALID)
    pod = env.pod()
    cfg = env.container_config(metadata=pb.ContainerMetadata(name=huge))
    refused(lambda: env.create(pod, cfg), INVALID, "metadata.name")
    assert env.peapod.log_path.stat().st_size < 4 << 20


def test_container_names_are_checked(env: Env) -> None:
    pod = env.pod()
    # The last two reached conmon, which exited 1: INTERNAL (the long hostile-input run).
    for name in ("", "a/b", "a b", "x" * 254, "c\nd", "\U000fb567\x93\xd8", "caf\xe9"):
        cfg = env.container_config(metadata=pb.ContainerMetadata(name=name))
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID, "metadata.name")
    assert env.containers() == []


# ---- images -------------------------------------------------------------------------


def test_image_references_and_credentials_are_checked(env: Env) -> None:
    for image in ("127.0.0.1:99999/busybox:latest", "127.0.0.1:0/busybox:latest",
                  "busybox\0:latest"):  # fmt: skip
        req = pb.PullImageRequest(image=pb.ImageSpec(image=image))
        refused(lambda req=req: env.peapod.images.PullImage(req, timeout=20), INVALID)
    for auth in (pb.AuthConfig(auth="üser:pässword"), pb.AuthConfig(username="u\nx", password="p"),
                 pb.AuthConfig(registry_token="tök\r\nX-Evil: 1"),
                 pb.AuthConfig(identity_token="a\nb")):  # fmt: skip
        req = pb.PullImageRequest(image=pb.ImageSpec(image=env.image), auth=auth)
        refused(lambda req=req: env.peapod.images.PullImage(req, timeout=20), INVALID,
                "credentials")  # fmt: skip


# ---- values runc, conmon or the kernel would refuse -----------------------------------


def test_mount_destinations_runc_refuses_are_invalid(env: Env) -> None:
    pod = env.pod()
    for dest in ("/", "/proc", "/proc/sys", "/proc/../", "//"):
        cfg = env.container_config(mounts=[pb.Mount(container_path=dest,
                                                    host_path=str(env.logs))])
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID, "container_path")
    assert env.containers() == []


def test_missing_command_binary_is_refused_at_create(env: Env) -> None:
    pod = env.pod()
    for command in (["/no/such/binary"], ["no-such-command"], ["/etc/passwd"]):
        cfg = env.container_config(command)
        refused(lambda cfg=cfg: env.create(pod, cfg), INVALID, command[0])
    assert env.containers() == []
    # A binary on a volume is not checked against the image: the mount provides it.
    tools = env.base / "tools"
    tools.mkdir()
    shutil.copy("/bin/true", tools / "tool")
    try:
        cfg = env.container_config(["/opt/tools/tool"], mounts=[
            pb.Mount(container_path="/opt/tools", host_path=str(tools), readonly=True)])
        env.create(pod, cfg)
    finally:
        env.remove_all()
        shutil.rmtree(tools)


def test_exec_of_a_missing_binary_is_invalid(env: Env) -> None:
    ctr = env.running(env.pod())
    for cmd in (["/no/such/binary"], ["no-such-command", "x"], ["../.."], ["/etc/passwd"]):
        req = pb.ExecSyncRequest(container_id=ctr, cmd=cmd)
        refused(lambda req=req: env.rt.ExecSync(req, timeout=20), INVALID, "executable")
    ok = env.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["true"]), timeout=20)
    assert ok.exit_code == 0


BAD_RESOURCES = [
    {"cpu_shares": 1 << 40},
    {"cpu_shares": 1},
    {"cpu_quota": 5},
    {"cpu_quota": -5},
    {"cpu_period": 10},
    {"cpu_period": 10_000_000},
    {"memory_limit_in_bytes": 4096},
    {"oom_score_adj": 5000},
    {"oom_score_adj": -1001},
    {"cpuset_cpus": "0-abc"},
    {"cpuset_mems": "0,,1"},
    {"cpuset_cpus": "3-1"},
    {"unified": {"../../cpu.max": "1"}},
    {"unified": {"memory.high": "1\n2"}},
]


@pytest.mark.parametrize("values", BAD_RESOURCES, ids=lambda v: "-".join(map(str, v)))
def test_cgroup_values_out_of_range_are_invalid(env: Env, values: dict[str, Any]) -> None:
    pod = env.pod()
    res = pb.LinuxContainerResources(**values)
    cfg = env.container_config(linux=pb.LinuxContainerConfig(resources=res))
    refused(lambda: env.create(pod, cfg), INVALID)
    ctr = env.running(pod)
    req = pb.UpdateContainerResourcesRequest(container_id=ctr, linux=res)
    refused(lambda: env.rt.UpdateContainerResources(req, timeout=20), INVALID)


# ---- pod annotations and runtime config -------------------------------------------------


@pytest.mark.parametrize("value", ["junk", "10Q", "1e999999999", "0.5", "100E", ""])
def test_bandwidth_annotations_are_parsed_as_quantities(env: Env, value: str) -> None:
    cfg = env.pod_config(annotations={"kubernetes.io/ingress-bandwidth": value})
    refused(lambda: env.run_pod(cfg), INVALID, "bandwidth")
    assert env.pods() == []


def test_pod_cidr_must_be_cidrs(env: Env) -> None:
    for cidr in ("not-a-cidr", "10.0.0.0/33", "10.0.0.0/24,", "10.0.0.1/24\n"):
        req = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr=cidr)))
        refused(lambda req=req: env.rt.UpdateRuntimeConfig(req, timeout=10), INVALID, "pod_cidr")
    ok = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
        network_config=pb.NetworkConfig(pod_cidr="10.0.0.0/24,fd00::/64")))
    env.rt.UpdateRuntimeConfig(ok, timeout=10)
