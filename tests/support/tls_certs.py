"""Throw-away PKI for TLS tests, made with the ``openssl`` CLI in a directory of the test's."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise AssertionError("the TLS tests need the openssl CLI (apt-get install openssl)")
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pair:
    """A PEM certificate and its key."""

    cert: Path
    key: Path


def make_ca(d: Path, name: str) -> Pair:
    """A self-signed CA called ``name`` in ``d``."""
    ca = Pair(d / f"{name}.crt", d / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(ca.key),
             "-out", str(ca.cert), "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    return ca


def issue(ca: Pair, d: Path, name: str, server: bool) -> Pair:
    """A leaf certificate ``ca`` signed: for 127.0.0.1 when ``server``, else a client's."""
    leaf = Pair(d / f"{name}.crt", d / f"{name}.key")
    csr, ext = d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   if server else "extendedKeyUsage=clientAuth\n")  # fmt: skip
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", f"/CN={name}", "-keyout", str(leaf.key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext),
             "-out", str(leaf.cert))  # fmt: skip
    return leaf


def client_context(ca: Pair, cert: Pair | None = None) -> ssl.SSLContext:
    """A client context trusting only ``ca``, presenting ``cert`` when given."""
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx
