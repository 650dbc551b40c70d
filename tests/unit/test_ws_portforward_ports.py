"""Which ports a channel-pair WebSocket port-forward session serves."""

from __future__ import annotations

import pytest

from cri.streaming.channels import ProtocolViolation
from cri.streaming.ws_portforward import requested_ports


@pytest.mark.parametrize("target, fallback, ports", [
    ("/portforward/t?ports=80,443", (), (80, 443)),
    ("/portforward/t?port=80&port=443", (), (80, 443)),
    ("/portforward/t?port=80,81&ports=90", (), (80, 81, 90)),
    ("/portforward/t", (8080,), (8080,)),
    ("/portforward/t?other=1", (1, 2), (1, 2)),
])  # fmt: skip
def test_ports_from_the_query_else_the_request(target: str, fallback: tuple[int, ...],
                                               ports: tuple[int, ...]) -> None:  # fmt: skip
    assert requested_ports(target, fallback) == ports


@pytest.mark.parametrize("target, needle", [
    ("/portforward/t?ports=0", "invalid port '0'"),
    ("/portforward/t?ports=65536", "invalid port '65536'"),
    ("/portforward/t?ports=http", "invalid port 'http'"),
    ("/portforward/t?ports=80,", "invalid port ''"),
    ("/portforward/t", "no port to forward"),
])  # fmt: skip
def test_bad_or_missing_ports_are_refused(target: str, needle: str) -> None:
    with pytest.raises(ProtocolViolation, match=needle):
        requested_ports(target, ())
