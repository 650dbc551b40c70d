"""The streaming server over TLS (and mutual TLS) through a real peapod, with test-made certs.

crictl against a TLS stream URL is not covered here (whether it can be made to trust
the test CA was not established).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support.images import StandardImages
from support.registry import Registry
from support.stream_client import WsSession
from support.tls_certs import client_context, issue, make_ca
from test_streaming import V5, Env


class Pki:
    """A server CA with a server and a client certificate, and a foreign CA's client."""

    def __init__(self, d: Path) -> None:
        self.ca = make_ca(d, "test-ca")
        self.server = issue(self.ca, d, "server", server=True)
        self.client = issue(self.ca, d, "client", server=False)
        other = make_ca(d, "other-ca")
        self.stranger = issue(other, d, "stranger", server=False)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="peapod-tls-") as d:
        yield Pki(Path(d))


def _env(registry: Registry, images: StandardImages, streaming: dict[str, Any]) -> Env:
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root (containers)")
    return Env(registry, images, streaming)


@pytest.fixture(scope="module")
def tls_env(registry: Registry, test_images: StandardImages, pki: Pki) -> Iterator[Env]:
    e = _env(registry, test_images, {"tls_cert": str(pki.server.cert),
                                     "tls_key": str(pki.server.key)})  # fmt: skip
    with e.serving():
        yield e


@pytest.fixture(scope="module")
def mtls_env(registry: Registry, test_images: StandardImages, pki: Pki) -> Iterator[Env]:
    e = _env(registry, test_images, {"tls_cert": str(pki.server.cert),
                                     "tls_key": str(pki.server.key),
                                     "tls_client_ca": str(pki.ca.cert)})  # fmt: skip
    with e.serving():
        yield e


def _exec_echo(e: Env, ctx: ssl.SSLContext) -> None:
    url = e.exec_url(e.ctr, ["sh", "-c", "echo out; echo err >&2; exit 3"], stderr=True)
    assert url.startswith("https://127.0.0.1:"), url
    r = WsSession(url, [V5], tls=ctx).finish()
    assert (r.out(1), r.out(2), r.close_code) == (b"out\n", b"err\n", 1000)
    assert json.loads(r.out(3))["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_exec_over_tls_verified_against_the_test_ca(tls_env: Env, pki: Pki) -> None:
    _exec_echo(tls_env, client_context(pki.ca))
    url = tls_env.exec_url(tls_env.ctr, ["true"])
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as plain:
        plain.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            reply = plain.recv(100)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/")  # no plain HTTP on a TLS port


def test_bulk_stdin_and_stdout_survive_the_tls_pump(tls_env: Env, pki: Pki) -> None:
    s = WsSession(tls_env.exec_url(tls_env.ctr, ["sh", "-c", "head -c 3000000 /dev/zero; "
                                                 "wc -c"], stdin=True),
                  [V5], tls=client_context(pki.ca))  # fmt: skip
    s.send(0, b"x" * 200000)
    s.send_raw(bytes([255, 0]))  # v5: stdin is closed
    r = s.finish(60)
    assert len(r.out(1)) == 3000000 + len(b"200000\n"), len(r.out(1))
    assert r.out(1).endswith(b"200000\n")
    assert json.loads(r.out(3))["status"] == "Success"


def _handshake(url: str, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection to ``url``'s server, handshake done as far as the client knows."""
    parts = urlsplit(url)
    s = ctx.wrap_socket(socket.create_connection((parts.hostname, parts.port), timeout=10),
                        server_hostname=parts.hostname)  # fmt: skip
    return s


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    mtls_env: Env, pki: Pki, who: str
) -> None:
    ctx = client_context(pki.ca, None if who == "no certificate" else pki.stranger)
    url = mtls_env.exec_url(mtls_env.ctr, ["true"])
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|UNKNOWN_CA|unknown ca"):
        # TLS 1.3: the server's verdict on the client's certificate arrives on the first read
        _handshake(url, ctx).recv(100)


def test_mutual_tls_serves_a_client_with_a_trusted_certificate(mtls_env: Env, pki: Pki) -> None:
    _exec_echo(mtls_env, client_context(pki.ca, pki.client))


def _counts(e: Env) -> tuple[int, int]:
    assert e.peapod.proc is not None
    pid = e.peapod.proc.pid
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def _trickle(port: int, stop: threading.Event) -> float:
    """Send a ClientHello a byte a second (each read is quick, the whole never ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        start = time.monotonic()
        for b in b"\x16\x03\x01\x02\x00" + bytes(512):
            try:
                s.sendall(bytes([b]))
                if stop.wait(1.0):
                    break
            except OSError:
                break
        return time.monotonic() - start


def test_a_client_that_never_handshakes_is_dropped(tls_env: Env) -> None:
    port = urlsplit(tls_env.exec_url(tls_env.ctr, ["true"])).port
    assert port is not None
    time.sleep(0.5)
    base = _counts(tls_env)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_trickle, port, stop)
        time.sleep(0.5)
        during = _counts(tls_env)
        assert during[0] >= base[0] + 3 and during[1] >= base[1] + 4, (base, during)
        start = time.monotonic()
        for s in silent:
            assert s.recv(1) == b""  # the server hung up
            s.close()
        assert 8 < time.monotonic() - start < 15
        trickled = slow.result(timeout=20)
        stop.set()
    assert 9 < trickled < 14, trickled  # the timeout bounds the whole handshake
    deadline = time.monotonic() + 5
    while any(now > was for now, was in zip(_counts(tls_env), base, strict=True)):
        assert time.monotonic() < deadline, (base, _counts(tls_env))
        time.sleep(0.1)
