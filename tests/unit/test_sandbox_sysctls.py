"""Unit tests for sysctl name parsing and validation (reads /proc/sys, writes nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import InvalidArgument
from sandbox.sysctls import (
    IPC,
    NET,
    Sysctl,
    explain_failure,
    namespace_of,
    parse_name,
    setup_argv,
    validate,
)


@pytest.mark.parametrize(
    ("name", "dotted", "path"),
    [
        ("net.ipv4.ip_forward", "net.ipv4.ip_forward", "net/ipv4/ip_forward"),
        ("net/ipv4/ip_forward", "net.ipv4.ip_forward", "net/ipv4/ip_forward"),
        # In the slash form a dot belongs to a component (a VLAN interface name).
        (
            "net/ipv4/conf/eth0.100/rp_filter",
            "net.ipv4.conf.eth0/100.rp_filter",
            "net/ipv4/conf/eth0.100/rp_filter",
        ),
        (
            "net.ipv4.conf.eth0/100.rp_filter",
            "net.ipv4.conf.eth0/100.rp_filter",
            "net/ipv4/conf/eth0.100/rp_filter",
        ),
    ],
)
def test_parse_name_forms(name: str, dotted: str, path: str) -> None:
    assert parse_name(name) == (dotted, path)


@pytest.mark.parametrize(
    "name",
    [
        "",
        " net.ipv4.ip_forward",
        "net..ipv4",
        "net/../kernel/pid_max",
        "net.ipv4.a b",
        "net/ipv4/",
        "/net/ipv4/ip_forward",
    ],
)
def test_parse_name_rejects_malformed(name: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_name(name)


@pytest.mark.parametrize(
    ("name", "ns"),
    [
        ("net.core.somaxconn", NET),
        ("kernel.shmmni", IPC),
        ("kernel.shm_rmid_forced", IPC),
        ("kernel.msgmax", IPC),
        ("kernel.sem", IPC),
        ("fs.mqueue.msg_max", IPC),
        ("kernel.semx", None),
        ("kernel.pid_max", None),
        ("vm.swappiness", None),
        ("fs.file-max", None),
        ("network.x", None),
    ],
)
def test_namespace_of(name: str, ns: str | None) -> None:
    assert namespace_of(name) == ns


def test_validate_accepts_namespaced_and_keeps_order() -> None:
    got = validate(
        {"net/ipv4/ip_unprivileged_port_start": "80", "kernel.shmmni": "8192"},
        host_network=False,
        host_ipc=False,
    )
    assert got == [
        Sysctl(
            "net.ipv4.ip_unprivileged_port_start", "net/ipv4/ip_unprivileged_port_start", "80", NET
        ),
        Sysctl("kernel.shmmni", "kernel/shmmni", "8192", IPC),
    ]


@pytest.mark.parametrize(
    ("sysctls", "host_network", "host_ipc", "needle"),
    [
        ({"kernel.pid_max": "1"}, False, False, "not namespaced"),
        ({"vm.swappiness": "1"}, False, False, "not namespaced"),
        ({"net.ipv4.no_such_knob": "1"}, False, False, "does not exist"),
        ({"net.ipv4.ip_forward": "1"}, True, False, "host's network"),
        ({"kernel.shmmni": "1"}, False, True, "host's IPC"),
        ({"fs.mqueue.msg_max": "1"}, False, True, "host's IPC"),
        ({"net.ipv4.ip_forward": "1\n0"}, False, False, "newline"),
    ],
)
def test_validate_rejects(
    sysctls: dict[str, str], host_network: bool, host_ipc: bool, needle: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(sysctls, host_network, host_ipc)
    assert needle in info.value.message
    assert next(iter(sysctls)) in info.value.message


def test_validate_uses_given_proc_sys(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "made_up").write_text("0\n")
    assert validate({"net.ipv4.made_up": "1"}, False, False, proc_sys=tmp_path)[0].value == "1"
    with pytest.raises(InvalidArgument):
        validate({"net.ipv4": "1"}, False, False, proc_sys=tmp_path)  # a directory


def test_setup_argv_passes_values_as_arguments() -> None:
    s = Sysctl("net.ipv4.ip_forward", "net/ipv4/ip_forward", "$(reboot); 1", NET)
    argv = setup_argv("pod-a", [s], lo_up=False)
    assert argv[1] == "-c"
    assert argv[4:] == ["pod-a", "", "net/ipv4/ip_forward", "$(reboot); 1"]
    assert "reboot" not in argv[2]


def test_explain_failure_names_the_sysctl() -> None:
    s = Sysctl("net.ipv4.ip_forward", "net/ipv4/ip_forward", "abc", NET)
    stderr = "sh: 5: printf: printf: I/O error\npeapod-sysctl-failed net/ipv4/ip_forward\n"
    msg = explain_failure(stderr, [s])
    assert msg is not None
    assert "net.ipv4.ip_forward=abc" in msg and "I/O error" in msg
    assert explain_failure("something else", [s]) is None
