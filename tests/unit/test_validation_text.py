"""The shared checks on client strings (base.text) and addresses (base.netaddr)."""

from __future__ import annotations

import pytest

from base.errors import InvalidArgument
from base.netaddr import ip_address, ip_network
from base.text import check_no_nul, check_path, check_text, control_char, shorten


def test_shorten_keeps_short_values_whole_and_cuts_long_ones_at_both_ends() -> None:
    assert shorten("abc") == "'abc'"
    assert shorten(42) == "'42'"
    long = "/" + "d" * 100_000 + "/profile.json"
    cut = shorten(long)
    assert len(cut) < 90
    assert cut.startswith("'/ddd") and cut.endswith("profile.json'") and "..." in cut
    assert shorten("x\ny") == repr("x\ny")  # control characters come back escaped


def test_control_characters_are_found() -> None:
    assert control_char("plain text, ünïcode") is None
    assert control_char("a\nb") == "\n"
    assert control_char("a\0b") == "\0"
    assert control_char("del\x7f") == "\x7f"
    assert control_char("c1\x93") == "\x93"  # C1 controls are control characters too


def test_check_text_bounds_and_control_characters() -> None:
    assert check_text("fine", "f", 10) == "fine"
    with pytest.raises(InvalidArgument, match="5 bytes long; the limit is 4"):
        check_text("hello", "f", 4)
    with pytest.raises(InvalidArgument, match="3 bytes long"):
        check_text("é!", "f", 2)  # bytes, not characters
    with pytest.raises(InvalidArgument, match="control character"):
        check_text("a\nb", "f", 10)
    assert check_text("a\n\tb", "f", 10, newlines=True) == "a\n\tb"
    with pytest.raises(InvalidArgument, match="control character"):
        check_text("a\0b", "f", 10, newlines=True)
    with pytest.raises(InvalidArgument, match="control character"):
        check_text("a\rb", "f", 10, newlines=True)


def test_check_no_nul() -> None:
    assert check_no_nul("a\nb", "arg") == "a\nb"
    with pytest.raises(InvalidArgument, match="NUL byte"):
        check_no_nul("a\0b", "arg")


def test_check_path() -> None:
    assert check_path("/var/log/pods/x", "p") == "/var/log/pods/x"
    assert check_path("rel/x", "p", absolute=False) == "rel/x"
    with pytest.raises(InvalidArgument, match="absolute path"):
        check_path("rel/x", "p")
    with pytest.raises(InvalidArgument, match="4095"):
        check_path("/" + "a/" * 3000, "p")
    with pytest.raises(InvalidArgument, match="longer than 255"):
        check_path("/" + "a" * 256, "p")
    with pytest.raises(InvalidArgument, match="control character"):
        check_path("/a\0b", "p")
    message = ""
    try:
        check_path("/" + "d" * (1 << 20), "log_directory")
    except InvalidArgument as exc:
        message = exc.message
    assert "log_directory" in message and len(message) < 200


@pytest.mark.parametrize("text", [
    "fe80::1%eth0\nnameserver 6.6.6.6", "fe80::1%", "fe80::1%eth0 x", "fe80::1%a/b",
    "fe80::1%" + "e" * 16, "2001:db8::1%eth0", "10.0.0.1%eth0", "not-an-ip", "1" * 100_000,
])  # fmt: skip
def test_zones_must_name_an_interface_on_a_link_local_address(text: str) -> None:
    with pytest.raises(InvalidArgument, match="DNS server") as err:
        ip_address(text, "DNS server", zone=True)
    assert len(err.value.message) < 250


def test_zones_are_refused_where_they_mean_nothing() -> None:
    assert str(ip_address("fe80::1%eth0", "s", zone=True)) == "fe80::1%eth0"
    assert str(ip_address("fe80::1%3", "s", zone=True)) == "fe80::1%3"
    assert str(ip_address("10.0.0.1", "s")) == "10.0.0.1"
    assert str(ip_address("fd00::1", "s")) == "fd00::1"
    with pytest.raises(InvalidArgument, match="zone"):
        ip_address("fe80::1%eth0", "host_ip")


def test_networks() -> None:
    assert str(ip_network("10.244.0.0/24", "pod_cidr")) == "10.244.0.0/24"
    assert str(ip_network("fd00::/64", "pod_cidr")) == "fd00::/64"
    for bad in ("10.0.0.0/33", "10.0.0.1/24", "nope", "", "fd00::%eth0/64", "10.0.0.0/24\n"):
        with pytest.raises(InvalidArgument, match="pod_cidr"):
            ip_network(bad, "pod_cidr")
