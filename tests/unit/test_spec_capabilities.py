"""Capability names, the daemon's bounding set and the add/drop rules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from base.errors import InvalidArgument
from oci.spec import capabilities
from oci.spec.capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    container_capabilities,
    normalize,
    parse_cap_mask,
    process_capabilities,
    read_bounding_set,
)

# This VM's bounding set: everything up to CAP_CHECKPOINT_RESTORE except CAP_SYS_RESOURCE.
NO_SYS_RESOURCE = parse_cap_mask("000001fffeffffff")
DEFAULTS_IN_ORDER = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
]


def caps(add: tuple[str, ...] = (), drop: tuple[str, ...] = (), privileged: bool = False,
         bounding: frozenset[str] = NO_SYS_RESOURCE) -> list[str]:
    return container_capabilities(
        add, drop, privileged=privileged, defaults=DEFAULT_CAPABILITIES, bounding=bounding
    )


def test_parse_cap_mask() -> None:
    assert ALL_CAPABILITIES - {"CAP_SYS_RESOURCE"} == NO_SYS_RESOURCE
    assert parse_cap_mask("0000000000000003") == {"CAP_CHOWN", "CAP_DAC_OVERRIDE"}


def test_read_bounding_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t0000000000200000\nCapAmb:\t0\n")
    assert read_bounding_set(str(status)) == {"CAP_SYS_ADMIN"}
    status.write_text("Name:\tx\n")
    with pytest.raises(RuntimeError):
        read_bounding_set(str(status))


@pytest.mark.parametrize("name", ["net_admin", "NET_ADMIN", "cap_net_admin", " CAP_NET_ADMIN "])
def test_normalize_any_spelling(name: str) -> None:
    assert normalize(name) == "CAP_NET_ADMIN"


def test_normalize_all_and_unknown() -> None:
    assert normalize("all") == "ALL"
    with pytest.raises(InvalidArgument, match="unknown capability 'NET_WIZARD'"):
        normalize("NET_WIZARD")


def test_defaults_in_kernel_order() -> None:
    assert caps() == DEFAULTS_IN_ORDER


def test_add_and_drop_named() -> None:
    got = caps(add=("net_admin", "CAP_SYS_ADMIN"), drop=("kill", "chown"))
    assert got == [
        "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_SYS_ADMIN",
    ]


def test_drop_wins_over_add() -> None:
    assert "CAP_NET_RAW" not in caps(add=("NET_RAW",), drop=("NET_RAW",))


def test_add_all_gives_daemon_caps_minus_drops() -> None:
    got = caps(add=("ALL",), drop=("CHOWN",))
    assert set(got) == NO_SYS_RESOURCE - {"CAP_CHOWN"}


def test_drop_all_then_adds() -> None:
    assert caps(add=("NET_BIND_SERVICE",), drop=("ALL",)) == ["CAP_NET_BIND_SERVICE"]
    assert caps(drop=("all",)) == []
    assert caps(add=("ALL",), drop=("ALL",)) == []


def test_privileged_gets_all_the_daemon_has() -> None:
    got = caps(drop=("ALL",), privileged=True)
    assert set(got) == NO_SYS_RESOURCE
    assert got[0] == "CAP_CHOWN" and got[-1] == "CAP_CHECKPOINT_RESTORE"


def test_missing_daemon_cap_dropped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    capabilities._already_warned.discard("CAP_SYS_RESOURCE")
    with caplog.at_level(logging.WARNING, logger="oci.spec.capabilities"):
        assert "CAP_SYS_RESOURCE" not in caps(add=("SYS_RESOURCE",))
        assert "CAP_SYS_RESOURCE" not in caps(add=("SYS_RESOURCE",))
    warnings = [r for r in caplog.records if "CAP_SYS_RESOURCE" in r.getMessage()]
    assert len(warnings) == 1


def test_process_capabilities_shape() -> None:
    assert process_capabilities(["CAP_KILL"]) == {
        "bounding": ["CAP_KILL"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "inheritable": [],
        "ambient": [],
    }
