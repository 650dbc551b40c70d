"""CNI results: ADD success results (every spec version) and VERSION answers.

Results are parsed into typed records for peapod's own use; the raw JSON is
kept as-is because it is what later plugins receive as ``prevResult``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from cni.version import at_least

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ResultInvalid(ValueError):
    """A plugin's output does not follow the CNI result format (message says where)."""


@dataclass
class Interface:
    """An interface created by the attachment; ``sandbox`` is empty on the host."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""


@dataclass
class IPConfig:
    """An address (with prefix) and its gateway; ``interface`` indexes ``interfaces``."""

    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def version(self) -> int:
        return self.address.version


@dataclass
class Route:
    """A route created by the attachment."""

    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass
class DNS:
    """DNS settings reported by the network."""

    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class Result:
    """A parsed ADD result plus the exact JSON the plugin printed."""

    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class VersionInfo:
    """A plugin's answer to VERSION."""

    cni_version: str
    supported_versions: list[str]


def _decode(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        return copy.deepcopy(data)
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultInvalid(f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ResultInvalid("not a JSON object")
    return doc


def _str(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ResultInvalid(f"{where} must be a string, not {value!r}")
    return value


def _uint(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ResultInvalid(f"{where} must be a non-negative integer, not {value!r}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ResultInvalid(f"{where} must be a list of strings")
    return list(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResultInvalid(f"{where} must be an object, not {value!r}")
    return value


def _object_list(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ResultInvalid(f"{where} must be a list")
    return [_object(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _address(value: Any, where: str) -> IPInterface:
    text = _str(value, where)
    if "/" not in text:
        raise ResultInvalid(f"{where} {text!r} is not in CIDR notation")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ResultInvalid(f"{where} {text!r} is not an IP address in CIDR notation") from None


def _ip(value: Any, where: str) -> IPAddress | None:
    if value is None or value == "":
        return None
    try:
        return ipaddress.ip_address(_str(value, where))
    except ValueError:
        raise ResultInvalid(f"{where} {value!r} is not an IP address") from None


def _route(doc: dict[str, Any], where: str) -> Route:
    try:
        dst = ipaddress.ip_network(_str(doc.get("dst"), f"{where}.dst"), strict=False)
    except ValueError:
        raise ResultInvalid(f"{where}.dst {doc.get('dst')!r} is not a CIDR network") from None
    return Route(
        dst=dst,
        gw=_ip(doc.get("gw"), f"{where}.gw"),
        mtu=_uint(doc.get("mtu"), f"{where}.mtu"),
        advmss=_uint(doc.get("advmss"), f"{where}.advmss"),
        priority=_uint(doc.get("priority"), f"{where}.priority"),
        table=_uint(doc.get("table"), f"{where}.table"),
        scope=_uint(doc.get("scope"), f"{where}.scope"),
    )


def _dns(value: Any) -> DNS:
    if value is None:
        return DNS()
    doc = _object(value, "dns")
    return DNS(
        nameservers=_str_list(doc.get("nameservers"), "dns.nameservers"),
        domain=_str(doc.get("domain"), "dns.domain"),
        search=_str_list(doc.get("search"), "dns.search"),
        options=_str_list(doc.get("options"), "dns.options"),
    )


def _parse_legacy(doc: dict[str, Any], version: str) -> Result:
    """Spec 0.1.0/0.2.0: one ``ip4`` and/or ``ip6`` block, no interfaces."""
    result = Result(cni_version=version, dns=_dns(doc.get("dns")), raw=doc)
    for key, family in (("ip4", 4), ("ip6", 6)):
        if doc.get(key) is None:
            continue
        block = _object(doc[key], key)
        address = _address(block.get("ip"), f"{key}.ip")
        if address.version != family:
            raise ResultInvalid(f"{key}.ip {block.get('ip')!r} is not an IPv{family} address")
        result.ips.append(IPConfig(address, _ip(block.get("gateway"), f"{key}.gateway")))
        for i, route in enumerate(_object_list(block.get("routes"), f"{key}.routes")):
            result.routes.append(_route(route, f"{key}.routes[{i}]"))
    return result


def _parse_current(doc: dict[str, Any], version: str) -> Result:
    """Spec 0.3.0 to 1.1.0: ``interfaces``, ``ips``, ``routes``, ``dns``."""
    result = Result(cni_version=version, dns=_dns(doc.get("dns")), raw=doc)
    for i, item in enumerate(_object_list(doc.get("interfaces"), "interfaces")):
        where = f"interfaces[{i}]"
        result.interfaces.append(Interface(
            name=_str(item.get("name"), f"{where}.name"),
            mac=_str(item.get("mac"), f"{where}.mac"),
            sandbox=_str(item.get("sandbox"), f"{where}.sandbox"),
            mtu=_uint(item.get("mtu"), f"{where}.mtu"),
            socket_path=_str(item.get("socketPath"), f"{where}.socketPath"),
            pci_id=_str(item.get("pciID"), f"{where}.pciID"),
        ))
    for i, item in enumerate(_object_list(doc.get("ips"), "ips")):
        where = f"ips[{i}]"
        address = _address(item.get("address"), f"{where}.address")
        family = item.get("version")  # 0.3.x/0.4.0 only; dropped in 1.0.0
        if family is not None and str(family) != str(address.version):
            raise ResultInvalid(
                f"{where}.version {family!r} does not match address {item.get('address')!r}"
            )
        index = _uint(item.get("interface"), f"{where}.interface")
        if index is not None and index >= len(result.interfaces):
            raise ResultInvalid(
                f"{where}.interface {index} is out of range "
                f"({len(result.interfaces)} interfaces listed)"
            )
        result.ips.append(IPConfig(address, _ip(item.get("gateway"), f"{where}.gateway"), index))
    for i, item in enumerate(_object_list(doc.get("routes"), "routes")):
        result.routes.append(_route(item, f"routes[{i}]"))
    return result


def parse_result(data: bytes | str | dict[str, Any], config_version: str) -> Result:
    """Parse an ADD result; the format follows its own ``cniVersion`` if given.

    Raises ResultInvalid naming the offending field.
    """
    doc = _decode(data)
    version = _str(doc.get("cniVersion"), "cniVersion") or config_version
    if at_least(version, "0.3.0"):
        return _parse_current(doc, version)
    return _parse_legacy(doc, version)


def parse_version_info(data: bytes | str) -> VersionInfo:
    """Parse a VERSION answer; ResultInvalid if it lacks ``supportedVersions``."""
    doc = _decode(data)
    supported = doc.get("supportedVersions")
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise ResultInvalid("'supportedVersions' is missing or not a list of strings")
    return VersionInfo(_str(doc.get("cniVersion"), "cniVersion"), list(supported))
