"""The per-pod files containers get bind-mounted: hostname, resolv.conf and hosts.

Each file is written to a temporary name in the same directory and renamed
into place, so a reader sees the old or the new content, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from base.errors import InvalidArgument
from base.netaddr import ip_address
from base.text import shorten

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")

# The kubelet's limits on a pod's DNS search list.
MAX_SEARCH_DOMAINS = 32
MAX_SEARCH_CHARS = 2048
# glibc reads at most three nameservers (MAXNS) and the kubelet sends no more.
MAX_SERVERS = 3
MAX_OPTIONS = 32
MAX_OPTION_LEN = 64
# The kernel's limit on a UTS hostname (__NEW_UTS_LEN).
MAX_HOSTNAME_LEN = 64

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_OPTION = re.compile(r"^[A-Za-z0-9_.:+-]+$")


@dataclass(frozen=True)
class DnsConfig:
    """A pod's DNS settings as the kubelet sends them (CRI DNSConfig)."""

    servers: Sequence[str] = field(default_factory=tuple)
    searches: Sequence[str] = field(default_factory=tuple)
    options: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class PodFiles:
    """Where a pod's hostname, resolv.conf and hosts files were written."""

    hostname: Path
    resolv_conf: Path
    hosts: Path


def atomic_write(path: Path, content: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``content`` via a temporary file and rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def validate_hostname(hostname: str) -> None:
    """Reject hostnames the kernel or resolvers cannot take."""
    if len(hostname.encode()) > MAX_HOSTNAME_LEN:
        raise InvalidArgument(
            f"hostname {shorten(hostname)} is longer than {MAX_HOSTNAME_LEN} bytes"
        )
    if not _HOSTNAME.fullmatch(hostname):
        raise InvalidArgument(
            f"hostname {shorten(hostname)} is not valid: use letters, digits, '-', '.' and '_', "
            "starting and ending with a letter or digit"
        )


def _check_search(domain: str) -> None:
    name = domain[:-1] if domain.endswith(".") else domain
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(lb) for lb in labels):
        raise InvalidArgument(f"DNS search domain {shorten(domain)} is not a valid domain name")


def render_resolv_conf(dns: DnsConfig) -> str:
    """resolv.conf text for a DNS config; InvalidArgument on bad input."""
    lines = []
    if len(dns.servers) > MAX_SERVERS:
        raise InvalidArgument(
            f"{len(dns.servers)} DNS servers given; at most {MAX_SERVERS} are used"
        )
    for server in dns.servers:
        # A zone names the interface of a link-local server (fe80::1%eth0); checked,
        # since Python takes anything after '%', newlines included.
        ip_address(server, "DNS server", zone=True)
        lines.append(f"nameserver {server}")
    if len(dns.searches) > MAX_SEARCH_DOMAINS:
        raise InvalidArgument(
            f"{len(dns.searches)} DNS search domains given; at most {MAX_SEARCH_DOMAINS} allowed"
        )
    for domain in dns.searches:
        _check_search(domain)
    if dns.searches:
        search = " ".join(dns.searches)
        if len(search) > MAX_SEARCH_CHARS:
            raise InvalidArgument(
                f"DNS search list is {len(search)} characters; at most {MAX_SEARCH_CHARS} allowed"
            )
        lines.append(f"search {search}")
    if len(dns.options) > MAX_OPTIONS:
        raise InvalidArgument(f"{len(dns.options)} DNS options given; at most {MAX_OPTIONS}")
    for option in dns.options:
        if len(option) > MAX_OPTION_LEN or not _OPTION.fullmatch(option):
            raise InvalidArgument(f"DNS option {shorten(option)} is not valid")
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "".join(line + "\n" for line in lines)


def write_resolv_conf(
    path: Path, dns: DnsConfig | None, host_resolv: Path = HOST_RESOLV_CONF
) -> None:
    """Write resolv.conf from ``dns``, or copy the host's when ``dns`` is None."""
    if dns is not None:
        atomic_write(path, render_resolv_conf(dns))
    else:
        copy_host_file(host_resolv, path)


def render_hosts(hostname: str, ips: Sequence[str] = ()) -> str:
    """hosts text: the localhost lines, then one line per pod IP for ``hostname``."""
    validate_hostname(hostname)
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for ip in ips:
        addr = ip_address(ip, "pod IP")
        lines.append(f"{addr}\t{hostname}")
    return "".join(line + "\n" for line in lines)


def write_hosts(path: Path, hostname: str, ips: Sequence[str] = ()) -> None:
    """Write (or rewrite, once the pod has IPs) the pod's hosts file."""
    atomic_write(path, render_hosts(hostname, ips))


def write_hostname(path: Path, hostname: str) -> None:
    """Write the pod's hostname file."""
    validate_hostname(hostname)
    atomic_write(path, hostname + "\n")


def copy_host_file(src: Path, dest: Path) -> None:
    """Copy a host file (e.g. /etc/hosts) atomically; an absent source gives an empty file."""
    tmp_fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(tmp_fd)
    try:
        try:
            shutil.copyfile(src, tmp)
        except FileNotFoundError:
            Path(tmp).write_text("")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_pod_files(
    pod_dir: Path,
    hostname: str | None,
    dns: DnsConfig | None,
    host_network: bool,
    ips: Sequence[str] = (),
) -> PodFiles:
    """Write hostname, resolv.conf and hosts into ``pod_dir``.

    A host-network pod gets the host's hostname and hosts file (and the
    host's resolv.conf unless a DNS config is given).
    """
    # Validate everything before writing anything.
    resolv = render_resolv_conf(dns) if dns is not None else None
    if not host_network:
        if not hostname:
            raise InvalidArgument("a pod with its own network namespace needs a hostname")
        hosts = render_hosts(hostname, ips)
    pod_dir.mkdir(parents=True, exist_ok=True)
    files = PodFiles(pod_dir / "hostname", pod_dir / "resolv.conf", pod_dir / "hosts")
    if resolv is not None:
        atomic_write(files.resolv_conf, resolv)
    else:
        copy_host_file(HOST_RESOLV_CONF, files.resolv_conf)
    if host_network:
        atomic_write(files.hostname, socket.gethostname() + "\n")
        copy_host_file(HOST_HOSTS, files.hosts)
    else:
        atomic_write(files.hostname, hostname + "\n")
        atomic_write(files.hosts, hosts)
    return files
