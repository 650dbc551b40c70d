"""TLS settings of the streaming server are checked at start-up, naming the bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.tls_certs import issue, make_ca

from base.errors import FailedPrecondition
from cri.streaming.tls import server_context


def test_a_good_pair_and_client_ca_load(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    srv = issue(ca, tmp_path, "srv", server=True)
    ctx = server_context(str(srv.cert), str(srv.key), str(ca.cert))
    assert ctx is not None and ctx.verify_mode.name == "CERT_REQUIRED"
    assert server_context("", "", "") is None


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    srv = issue(ca, tmp_path, "srv", server=True)
    other = issue(ca, tmp_path, "other", server=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    missing = str(tmp_path / "missing.pem")
    cases = [
        ((missing, str(srv.key), ""), f"streaming.tls_cert {missing}"),
        ((str(srv.cert), missing, ""), f"streaming.tls_key {missing}"),
        ((str(junk), str(srv.key), ""), f"streaming.tls_cert {junk}"),
        ((str(srv.cert), str(other.key), ""), f"streaming.tls_key {other.key}"),
        ((str(srv.cert), str(srv.key), str(junk)), f"streaming.tls_client_ca {junk}"),
        (("", str(srv.key), ""), "need tls_cert"),
    ]
    for args, needle in cases:
        with pytest.raises(FailedPrecondition) as err:
            server_context(*args)
        assert needle in str(err.value), (args, str(err.value))
