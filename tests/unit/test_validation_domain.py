"""Domain checks on client input: what reaches files, argv, runc, conmon or a registry."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from base.errors import InvalidArgument
from conmon.argv import MAX_EXEC_TIMEOUT, exec_sync_argv
from oci.container.create import check_log_path, log_file
from oci.image.reference import parse
from oci.image.registry_auth import Credentials
from oci.spec import seccomp
from oci.spec.executable import check_executable
from oci.spec.inputs import SeccompProfile, SeccompProfileType
from oci.spec.mounts import destination
from oci.spec.process import MAX_ARG_STRLEN, check_exec, exec_limit, process_for_exec
from sandbox import sysctls
from sandbox.pod_config import PodConfig, PodMetadata, parse_quantity
from sandbox.pod_files import DnsConfig, render_resolv_conf

# ---- seccomp profiles: regular files only, bounded, never blocking ------------------


def test_a_fifo_profile_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "profile.fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(outcome, seccomp.read_profile, str(fifo)))
    worker.start()
    worker.join(3)
    blocked = worker.is_alive()
    if blocked:  # release the reader before failing, so the test run is not held
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(3)
    assert not blocked, "reading a FIFO profile blocked"
    assert isinstance(outcome[0], InvalidArgument) and "regular file" in str(outcome[0])


def _catch(into: list[BaseException], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        into.append(exc)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_devices_and_directories_are_not_profiles(path: str) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        seccomp.read_profile(path)
    assert time.monotonic() - start < 1


def test_a_profile_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "x": "' + "a" * (1 << 20) + '"}')
    with pytest.raises(InvalidArgument, match="bytes; the limit is"):
        seccomp.read_profile(str(big))


def test_localhost_profiles_are_loaded_up_front(tmp_path: Path) -> None:
    good = tmp_path / "ok.json"
    good.write_text('{"defaultAction": "SCMP_ACT_ERRNO"}')
    profile = SeccompProfile(SeccompProfileType.LOCALHOST, str(good))
    loaded = seccomp.load_localhost(profile)
    assert loaded is not None and loaded.loaded == {"defaultAction": "SCMP_ACT_ERRNO"}
    good.unlink()  # generation uses what was loaded, not the file
    caps: list[str] = []
    facts = SimpleNamespace(machine="x86_64", seccomp_profile_path="")
    out = seccomp.container_seccomp(loaded, privileged=False, caps=caps, daemon=facts)  # type: ignore[arg-type]
    assert out == {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    with pytest.raises(InvalidArgument, match="absolute path"):
        seccomp.load_localhost(SeccompProfile(SeccompProfileType.LOCALHOST, "rel.json"))
    with pytest.raises(InvalidArgument, match="control character"):
        seccomp.load_localhost(SeccompProfile(SeccompProfileType.LOCALHOST, "/a\0b"))


# ---- what the kernel can exec ----------------------------------------------------------


def test_exec_strings_are_bounded_by_the_kernel_limits() -> None:
    check_exec(["sh", "-c", "x" * (MAX_ARG_STRLEN - 1)], ["A=1"])
    with pytest.raises(InvalidArgument, match="per string"):
        check_exec(["echo", "x" * MAX_ARG_STRLEN], [])
    with pytest.raises(InvalidArgument, match="per string"):
        check_exec(["true"], ["BIG=" + "z" * MAX_ARG_STRLEN])
    many = ["y" * (100 << 10)] * (exec_limit() // (100 << 10) + 1)
    with pytest.raises(InvalidArgument, match="ARG_MAX"):
        check_exec(["echo", *many], [])
    with pytest.raises(InvalidArgument, match="NUL"):
        check_exec(["echo", "a\0b"], [])


def test_exec_commands_are_checked_before_conmon() -> None:
    spec = {"process": {"args": ["sleep"], "env": ["PATH=/bin"], "user": {}}}
    assert process_for_exec(spec, ["true"], tty=False)["args"] == ["true"]
    with pytest.raises(InvalidArgument, match="exec command"):
        process_for_exec(spec, ["echo", "x" * (200 << 10)], tty=False)


def test_exec_timeouts_fit_conmon() -> None:
    def argv(timeout: int) -> list[str]:
        return exec_sync_argv("conmon", "runc", "/run/runc", "a" * 64, process_spec_path="p",
                              pidfile="f", log_path="l", timeout_s=timeout,
                              log_global_size_max=1)  # fmt: skip

    assert argv(MAX_EXEC_TIMEOUT)[-2:] == ["-T", str(MAX_EXEC_TIMEOUT)]
    for bad in (2**31, -1):
        with pytest.raises(InvalidArgument, match="exec timeout"):
            argv(bad)


# ---- mounts and the command binary ------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "//", "/proc/../", "/proc", "/proc/sys", "/proc/1/ns"])
def test_destinations_runc_refuses(path: str) -> None:
    with pytest.raises(InvalidArgument, match="container_path"):
        destination(path)


def test_destinations_runc_takes_are_normalised() -> None:
    assert destination("/data/") == "/data"
    assert destination("//data//x/../y") == "/data/y"
    assert destination("/proc/cpuinfo") == "/proc/cpuinfo"  # lxcfs-style overrides


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("bin", "usr/bin", "etc", "opt"):
        (root / d).mkdir(parents=True)
    tool = root / "bin" / "busybox"
    tool.write_text("#!/bin/true\n")
    tool.chmod(0o755)
    (root / "bin" / "sh").symlink_to("/bin/busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return root


def spec(command: str, path: str = "/usr/bin:/bin", cwd: str = "/",
         mounts: tuple[str, ...] = ("/proc",)) -> dict[str, object]:  # fmt: skip
    return {
        "process": {"args": [command, "x"], "env": [f"PATH={path}"], "cwd": cwd},
        "mounts": [{"destination": m} for m in mounts],
    }


def test_commands_are_found_as_exec_would(rootfs: Path) -> None:
    for command in ("sh", "busybox", "/bin/sh", "/bin/../bin/busybox"):
        check_executable(spec(command), str(rootfs))
    check_executable(spec("./busybox", cwd="/bin"), str(rootfs))
    check_executable(spec("/opt/tool/run", mounts=("/opt/tool",)), str(rootfs))
    check_executable(spec("run", path="/opt/tool", mounts=("/opt/tool",)), str(rootfs))


@pytest.mark.parametrize("command,path", [
    ("/no/such/binary", "/bin"), ("no-such-command", "/usr/bin:/bin"), ("/etc/passwd", "/bin"),
    ("passwd", "/etc"), ("/bin", "/bin"), ("sh", "/usr/bin"),
])  # fmt: skip
def test_missing_or_unexecutable_commands_are_invalid(rootfs: Path, command: str,
                                                      path: str) -> None:  # fmt: skip
    with pytest.raises(InvalidArgument, match="not an executable file"):
        check_executable(spec(command, path=path), str(rootfs))


# ---- the container's log file stays in the pod's log directory -------------------------


@pytest.mark.parametrize("bad", [
    "../../x/y.log", "c/../../y.log", "/abs/y.log", "c/", ".", "c/..", "a\nb.log", "a\0b",
])  # fmt: skip
def test_log_paths_outside_the_log_directory_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="log_path"):
        check_log_path(bad)
    pod = SimpleNamespace(log_directory="/var/log/pods/p")
    with pytest.raises(InvalidArgument, match="log_path"):
        log_file(pod, bad, Path("/storage"))  # type: ignore[arg-type]


def test_log_paths_inside_are_joined() -> None:
    pod = SimpleNamespace(log_directory="/var/log/pods/p/")
    assert log_file(pod, "c/0.log", Path("/s")) == "/var/log/pods/p/c/0.log"  # type: ignore[arg-type]
    assert log_file(pod, "c/./0.log", Path("/s")) == "/var/log/pods/p/c/0.log"  # type: ignore[arg-type]
    assert log_file(SimpleNamespace(log_directory=""), "c/0.log",  # type: ignore[arg-type]
                    Path("/s")) == "/s/container.log"  # fmt: skip


# ---- pod files, sysctls, bandwidth -------------------------------------------------------


def test_dns_servers_cannot_inject_resolv_conf_lines() -> None:
    for server in ("fe80::1%eth0\nnameserver 6.6.6.6", "fe80::1%eth0 options x", "fe80::1%"):
        with pytest.raises(InvalidArgument, match="DNS server"):
            render_resolv_conf(DnsConfig(servers=[server]))
    text = render_resolv_conf(DnsConfig(servers=["fe80::1%eth0", "10.96.0.10"]))
    assert text == "nameserver fe80::1%eth0\nnameserver 10.96.0.10\n"


def test_sysctl_values_are_bounded_and_single_line(tmp_path: Path) -> None:
    proc = tmp_path / "sys"
    (proc / "net" / "ipv4").mkdir(parents=True)
    (proc / "net" / "ipv4" / "ip_local_port_range").write_text("")
    key = "net.ipv4.ip_local_port_range"
    ok = sysctls.validate({key: "1024\t65000"}, False, False, proc_sys=proc)
    assert ok[0].value == "1024\t65000"
    for value, words in (("1" * (1 << 20), "bytes"), ("1\r", "control character"),
                         ("1\n2", "newline")):  # fmt: skip
        with pytest.raises(InvalidArgument, match=words) as err:
            sysctls.validate({key: value}, False, False, proc_sys=proc)
        assert len(err.value.message) < 300


@pytest.mark.parametrize("text", ["junk", "10Q", "1e999999999", " 1M", "1M\n", "1" * 100])
def test_quantities_are_parsed_strictly(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_quantity(text)
    assert len(str(err.value)) < 200


def test_bandwidth_is_within_the_kubelet_bounds() -> None:
    meta = PodMetadata("a", "b", "c")
    assert PodConfig(meta, annotations={"kubernetes.io/egress-bandwidth": "1P"}).bandwidth() \
        == (None, 10**15)  # fmt: skip
    for value in ("999", "1.1P", "100E", "1e30"):
        pod = PodConfig(meta, annotations={"kubernetes.io/ingress-bandwidth": value})
        with pytest.raises(InvalidArgument, match="1k-1P"):
            pod.bandwidth()


# ---- images ----------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["0", "65536", "99999", "9" * 500])
def test_registry_ports_are_in_range(port: str) -> None:
    with pytest.raises(InvalidArgument, match="port") as err:
        parse(f"127.0.0.1:{port}/busybox:latest")
    assert len(err.value.message) < 400


def test_registry_ports_in_range_parse() -> None:
    assert parse("127.0.0.1:65535/busybox").domain == "127.0.0.1:65535"
    assert parse("[::1]:5000/busybox").domain == "[::1]:5000"
    assert parse("[::1]/busybox").domain == "[::1]"


@pytest.mark.parametrize("creds", [
    Credentials(auth="üser:pässword"), Credentials(auth="not base64!"),
    Credentials(username="a:b", password="p"), Credentials(username="u\nx", password="p"),
    Credentials(password="p\0"), Credentials(registry_token="tök"),
    Credentials(registry_token="a\r\nX-Evil: 1"), Credentials(identity_token="a b"),
    Credentials(auth="dXNlcgo="),  # "user\n": no ':' pair
])  # fmt: skip
def test_credentials_that_cannot_be_sent_are_invalid(creds: Credentials) -> None:
    with pytest.raises(InvalidArgument, match="credentials"):
        creds.validate()


def test_credentials_that_can_be_sent_are_kept() -> None:
    assert Credentials(username="ünï", password="pä ss").validate().basic() == ("ünï", "pä ss")
    assert Credentials(auth="dXNlcjpwYXNz").validate().basic() == ("user", "pass")
    assert Credentials(registry_token="eyJ.abc-_").validate().registry_token == "eyJ.abc-_"
