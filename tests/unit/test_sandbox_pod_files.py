"""Unit tests for hostname, resolv.conf and hosts rendering and writing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from base.errors import InvalidArgument
from sandbox import pod_files
from sandbox.pod_files import (
    DnsConfig,
    render_hosts,
    render_resolv_conf,
    validate_hostname,
    write_hosts,
    write_pod_files,
    write_resolv_conf,
)


def test_resolv_conf_lines() -> None:
    dns = DnsConfig(
        servers=["10.96.0.10", "fd00::a"],
        searches=["default.svc.cluster.local", "svc.cluster.local", "cluster.local."],
        options=["ndots:5", "edns0"],
    )
    assert render_resolv_conf(dns) == (
        "nameserver 10.96.0.10\n"
        "nameserver fd00::a\n"
        "search default.svc.cluster.local svc.cluster.local cluster.local.\n"
        "options ndots:5 edns0\n"
    )


def test_resolv_conf_empty_config_gives_empty_file() -> None:
    assert render_resolv_conf(DnsConfig()) == ""


def test_resolv_conf_search_limits() -> None:
    render_resolv_conf(DnsConfig(searches=[f"d{i}.example" for i in range(32)]))
    with pytest.raises(InvalidArgument, match="at most 32"):
        render_resolv_conf(DnsConfig(searches=[f"d{i}.example" for i in range(33)]))
    long_label = "a" * 60
    domain = ".".join([long_label] * 4)  # 243 chars
    ok = [domain] * 8  # 8*243 + 7 = 1951 chars
    render_resolv_conf(DnsConfig(searches=ok))
    with pytest.raises(InvalidArgument, match="2048"):
        render_resolv_conf(DnsConfig(searches=[domain] * 9))


@pytest.mark.parametrize(
    "dns",
    [
        DnsConfig(servers=["10.0.0.300"]),
        DnsConfig(servers=["dns.example"]),
        DnsConfig(searches=["bad domain"]),
        DnsConfig(searches=["evil\nnameserver 1.2.3.4"]),
        DnsConfig(searches=["-leading.example"]),
        DnsConfig(searches=[""]),
        DnsConfig(options=["ndots:5\nnameserver 1.1.1.1"]),
        DnsConfig(options=[""]),
    ],
)
def test_resolv_conf_rejects_bad_input(dns: DnsConfig) -> None:
    with pytest.raises(InvalidArgument):
        render_resolv_conf(dns)


def test_write_resolv_conf_copies_host_when_no_config(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    out = tmp_path / "resolv.conf"
    write_resolv_conf(out, None, host_resolv=host)
    assert out.read_text() == "nameserver 192.0.2.1\n"
    write_resolv_conf(out, DnsConfig(servers=["192.0.2.2"]))
    assert out.read_text() == "nameserver 192.0.2.2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host-resolv.conf", "resolv.conf"]


def test_hosts_content() -> None:
    assert render_hosts("pod-a") == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    assert render_hosts("pod-a", ["10.1.2.3", "fd00::5"]).splitlines()[2:] == [
        "10.1.2.3\tpod-a",
        "fd00::5\tpod-a",
    ]
    with pytest.raises(InvalidArgument):
        render_hosts("pod-a", ["not-an-ip"])


def test_write_hosts_rewrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    write_hosts(path, "pod-a")
    write_hosts(path, "pod-a", ["10.1.2.3"])
    assert path.read_text().endswith("10.1.2.3\tpod-a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["", "a" * 65, "pod a", "pod\n", "-pod", "pod-", "po/d"])
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_hostname(name)


def test_good_hostnames() -> None:
    for name in ["a", "pod-a", "web-0.web.default.svc", "a" * 64]:
        validate_hostname(name)


def test_pod_files_own_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_resolv = tmp_path / "host-resolv"
    host_resolv.write_text("nameserver 198.51.100.1\n")
    monkeypatch.setattr(pod_files, "HOST_RESOLV_CONF", host_resolv)
    files = write_pod_files(tmp_path / "pod", "pod-a", None, host_network=False)
    assert files.hostname.read_text() == "pod-a\n"
    assert files.resolv_conf.read_text() == "nameserver 198.51.100.1\n"
    assert files.hosts.read_text().startswith("127.0.0.1\tlocalhost\n")


def test_pod_files_host_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_hosts = tmp_path / "host-hosts"
    host_hosts.write_text("127.0.0.1 localhost\n192.0.2.9 node-1\n")
    monkeypatch.setattr(pod_files, "HOST_HOSTS", host_hosts)
    dns = DnsConfig(servers=["10.96.0.10"])
    files = write_pod_files(tmp_path / "pod", "ignored", dns, host_network=True)
    assert files.hostname.read_text() == socket.gethostname() + "\n"
    assert files.hosts.read_text() == host_hosts.read_text()
    assert files.resolv_conf.read_text() == "nameserver 10.96.0.10\n"


def test_pod_files_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        write_pod_files(tmp_path / "pod", "pod-a", DnsConfig(servers=["x"]), host_network=False)
    with pytest.raises(InvalidArgument):
        write_pod_files(tmp_path / "pod", "", None, host_network=False)
    assert not (tmp_path / "pod").exists()
