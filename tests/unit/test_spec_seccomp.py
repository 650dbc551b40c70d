"""Seccomp profiles: peapod's default, Localhost files, capability-gated rules."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from base.errors import Internal, InvalidArgument
from oci.spec.capabilities import DEFAULT_CAPABILITIES, parse_cap_mask
from oci.spec.inputs import DaemonFacts, SeccompProfile, SeccompProfileType
from oci.spec.seccomp import (
    PACKAGED_DEFAULT,
    container_seccomp,
    profile_from_legacy_path,
    read_profile,
    resolve_profile,
)

DAEMON = DaemonFacts(bounding_set=parse_cap_mask("000001fffeffffff"), machine="x86_64")
DEFAULT = SeccompProfile(SeccompProfileType.RUNTIME_DEFAULT)
# Syscalls that must never be allowed by the default profile without a capability.
DANGEROUS = {
    "mount", "umount2", "unshare", "setns", "sethostname", "setdomainname", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "perf_event_open", "ptrace", "reboot", "swapon", "swapoff", "pivot_root", "keyctl",
    "add_key", "request_key", "userfaultfd", "open_by_handle_at", "clock_settime",
    "settimeofday", "acct", "iopl", "ioperm", "lookup_dcookie", "quotactl", "vhangup",
    "name_to_handle_at", "io_uring_setup", "chroot", "syslog", "fsopen", "open_tree",
}


def default_for(caps: list[str] | tuple[str, ...], machine: str = "x86_64") -> dict[str, Any]:
    daemon = DaemonFacts(bounding_set=DAEMON.bounding_set, machine=machine)
    got = container_seccomp(DEFAULT, privileged=False, caps=caps, daemon=daemon)
    assert got is not None
    return got


def unconditional(profile: dict[str, Any]) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for name in rule["names"]
    }


def test_default_profile_shape_on_x86_64() -> None:
    profile = default_for(DEFAULT_CAPABILITIES)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
    allowed = unconditional(profile)
    assert {"read", "write", "openat", "execve", "futex", "socket", "clone3"} - allowed == {
        "clone3"
    }
    assert not allowed & DANGEROUS


def test_default_profile_architectures_per_machine() -> None:
    assert default_for([], "aarch64")["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "architectures" not in default_for([], "riscv64")  # native arch only


def test_sys_admin_opens_mount_and_hostname_and_namespaces() -> None:
    plain = default_for(DEFAULT_CAPABILITIES)
    admin = default_for([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    gained = unconditional(admin) - unconditional(plain)
    assert {"sethostname", "setdomainname", "mount", "umount2", "unshare", "setns",
            "clone", "clone3"} <= gained
    assert not {"keyctl", "kexec_load", "ptrace"} & unconditional(admin)


def test_clone_without_sys_admin_is_filtered_and_clone3_gets_enosys() -> None:
    plain = default_for(DEFAULT_CAPABILITIES)
    clone = [r for r in plain["syscalls"] if "clone" in r["names"]]
    assert clone == [{
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
    }]
    clone3 = [r for r in plain["syscalls"] if "clone3" in r["names"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    admin = default_for(["CAP_SYS_ADMIN"])
    assert not [r for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ERRNO"]


@pytest.mark.parametrize(
    ("cap", "syscall"),
    [("CAP_SYS_PTRACE", "ptrace"), ("CAP_SYS_TIME", "clock_settime"),
     ("CAP_BPF", "bpf"), ("CAP_PERFMON", "perf_event_open"), ("CAP_SYS_MODULE", "init_module"),
     ("CAP_SYS_CHROOT", "chroot"), ("CAP_DAC_READ_SEARCH", "open_by_handle_at")],
)
def test_capability_gated_syscalls(cap: str, syscall: str) -> None:
    assert syscall not in unconditional(default_for(DEFAULT_CAPABILITIES))
    assert syscall in unconditional(default_for([cap]))


def test_personality_only_with_known_values() -> None:
    rules = [r for r in default_for([])["syscalls"] if "personality" in r["names"]]
    assert sorted(r["args"][0]["value"] for r in rules) == [0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_packaged_profile_names_are_syscall_like() -> None:
    raw = json.loads(Path(PACKAGED_DEFAULT).read_text())
    names = [n for rule in raw["syscalls"] for n in rule["names"]]
    assert all(n.replace("_", "").isalnum() and n == n.lower() for n in names)
    assert "kexec_load" not in names and "keyctl" not in names


def test_unconfined_unset_and_privileged_have_no_filter() -> None:
    unconfined = SeccompProfile(SeccompProfileType.UNCONFINED)
    assert container_seccomp(unconfined, privileged=False, caps=[], daemon=DAEMON) is None
    assert container_seccomp(None, privileged=False, caps=[], daemon=DAEMON) is None
    assert container_seccomp(DEFAULT, privileged=True, caps=[], daemon=DAEMON) is None


def test_localhost_profile_loaded_as_given(tmp_path: Path) -> None:
    path = tmp_path / "block-chmod.json"
    path.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "comment": "x"}],
    }))
    profile = SeccompProfile(SeccompProfileType.LOCALHOST, str(path))
    assert container_seccomp(profile, privileged=False, caps=[], daemon=DAEMON) == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}],
    }


def test_localhost_problems_name_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(InvalidArgument, match=r"nope\.json' does not exist"):
        container_seccomp(SeccompProfile(SeccompProfileType.LOCALHOST, missing),
                          privileged=False, caps=[], daemon=DAEMON)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match=r"bad\.json' is not valid JSON"):
        read_profile(str(bad))
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_MAYBE"}))
    with pytest.raises(InvalidArgument, match="defaultAction"):
        read_profile(str(bad))
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "x"}]}))
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]"):
        read_profile(str(bad))
    with pytest.raises(InvalidArgument, match="absolute path"):
        container_seccomp(SeccompProfile(SeccompProfileType.LOCALHOST, "rel.json"),
                          privileged=False, caps=[], daemon=DAEMON)


def test_profile_reloaded_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    assert read_profile(str(path))["defaultAction"] == "SCMP_ACT_ALLOW"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    os.utime(path, (1, 1))
    assert read_profile(str(path))["defaultAction"] == "SCMP_ACT_LOG"


def test_broken_daemon_default_is_internal(tmp_path: Path) -> None:
    daemon = DaemonFacts(bounding_set=frozenset(), seccomp_profile_path=str(tmp_path / "x"))
    with pytest.raises(Internal, match="default seccomp profile"):
        container_seccomp(DEFAULT, privileged=False, caps=[], daemon=daemon)


def test_when_and_unless_caps() -> None:
    raw = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ALLOW", "whenCaps": ["NET_ADMIN", "SYS_ADMIN"]},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "unlessCaps": ["SYS_ADMIN"]},
            {"names": [], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    assert resolve_profile(raw, ["CAP_NET_ADMIN"], "x86_64")["syscalls"] == [
        {"names": ["a"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["b"], "action": "SCMP_ACT_ALLOW"},
    ]
    assert resolve_profile(raw, ["CAP_SYS_ADMIN"], "aarch64") == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"}],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("unconfined", None), ("runtime/default", DEFAULT), ("docker/default", DEFAULT),
     ("localhost//tmp/p.json", SeccompProfile(SeccompProfileType.LOCALHOST, "/tmp/p.json"))],
)
def test_legacy_profile_path(value: str, expected: SeccompProfile | None) -> None:
    assert profile_from_legacy_path(value) == expected


def test_legacy_profile_path_without_localhost_prefix_rejected() -> None:
    with pytest.raises(InvalidArgument, match="localhost/"):
        profile_from_legacy_path("/tmp/p.json")
