"""Network configurations: parsing, validation and loading from a directory.

A network is always held in list form (``name``, ``cniVersion``, ``plugins``);
a single-plugin ``.conf`` file is wrapped into a one-plugin list.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from base.errors import FailedPrecondition, InvalidArgument, NotFound
from cni.version import parse_version, select_version

CONFIG_EXTENSIONS = (".conflist", ".conf", ".json")
# Spec: a network name starts alphanumeric, then alphanumerics, '_', '.', '-'.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_CONFIG_BYTES = 1 << 20


class ConfigInvalid(ValueError):
    """A network configuration document breaks the CNI format (message says how)."""


@dataclass
class NetworkConfig:
    """One validated network: its list-form document and the facts derived from it."""

    name: str
    cni_version: str  # the version selected for talking to the plugins
    plugins: list[dict[str, Any]]
    raw: dict[str, Any]  # the whole list-form document, as loaded
    source: str = ""  # the file it came from, if any
    disable_check: bool = False
    disable_gc: bool = False

    def plugin_types(self) -> list[str]:
        """The ``type`` of each plugin, in chain order."""
        return [str(p["type"]) for p in self.plugins]

    def supports(self, minimum: str) -> bool:
        """True if the selected spec version is ``minimum`` or newer."""
        return parse_version(self.cni_version) >= parse_version(minimum)

    def to_dict(self) -> dict[str, Any]:
        """The document and its source, enough to rebuild this object."""
        return {"config": copy.deepcopy(self.raw), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Rebuild from ``to_dict`` output; InvalidArgument if it no longer validates."""
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise InvalidArgument("network record has no 'config' object", reason="netconf")
        return parse_network(data["config"], source=str(data.get("source", "")), single=False)


@dataclass
class SkippedFile:
    """A configuration file that was not used, and why."""

    path: str
    reason: str


@dataclass
class NetworkScan:
    """The outcome of loading a configuration directory."""

    directory: str
    networks: list[NetworkConfig] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def problems(self) -> str:
        """The skipped files as "file: reason; file: reason" (empty if none)."""
        return "; ".join(f"{os.path.basename(s.path)}: {s.reason}" for s in self.skipped)

    def pick(self, name: str | None = None) -> NetworkConfig:
        """The named network, or the first valid one when ``name`` is empty.

        Raises FailedPrecondition when there is no valid network at all and
        NotFound when the named one is absent; both list the skipped files.
        """
        if not self.networks:
            detail = self.problems() or "no .conflist, .conf or .json files"
            raise FailedPrecondition(
                f"no valid network config in {self.directory}: {detail}", reason="netconf"
            )
        if not name:
            return self.networks[0]
        for network in self.networks:
            if network.name == name:
                return network
        found = ", ".join(f"{n.name!r} ({os.path.basename(n.source)})" for n in self.networks)
        message = f"network {name!r} not found in {self.directory}; valid networks: {found}"
        if self.skipped:
            message += f"; skipped: {self.problems()}"
        raise NotFound(message, reason="netconf")


def _as_bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigInvalid(f"'{key}' must be true or false, not {value!r}")


def _check_plugin(index: int, plugin: Any) -> None:
    where = f"plugin {index + 1}"
    if not isinstance(plugin, dict):
        raise ConfigInvalid(f"{where} is not a JSON object")
    kind = plugin.get("type")
    if kind is None or kind == "":
        raise ConfigInvalid(f"missing 'type' in {where}")
    if not isinstance(kind, str):
        raise ConfigInvalid(f"'type' of {where} must be a string, not {kind!r}")
    if "/" in kind or "\\" in kind or kind in (".", "..") or "\0" in kind:
        raise ConfigInvalid(f"'type' {kind!r} of {where} must be a plain file name")
    caps = plugin.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise ConfigInvalid(f"'capabilities' of {where} ({kind}) must be an object")
    ipam = plugin.get("ipam")
    if ipam is not None and not isinstance(ipam, dict):
        raise ConfigInvalid(f"'ipam' of {where} ({kind}) must be an object")


def _wrap_single(doc: dict[str, Any]) -> dict[str, Any]:
    """List form of a single-plugin configuration (the plugin keeps every key)."""
    wrapped: dict[str, Any] = {
        "cniVersion": doc.get("cniVersion"),
        "name": doc.get("name"),
        "plugins": [copy.deepcopy(doc)],
    }
    for key in ("cniVersions", "disableCheck", "disableGC"):
        if key in doc:
            wrapped[key] = doc[key]
    return wrapped


def validate_network(doc: Any, single: bool | None = None) -> NetworkConfig:
    """Validate a decoded document; ConfigInvalid says what is wrong.

    ``single`` forces the single-plugin (True) or list (False) form; None
    decides by the presence of a ``plugins`` key.
    """
    if not isinstance(doc, dict):
        raise ConfigInvalid("the top level is not a JSON object")
    if single is None:
        single = "plugins" not in doc
    if single:
        doc = _wrap_single(doc)
    elif "plugins" not in doc:
        raise ConfigInvalid("missing 'plugins' (a .conflist holds a list of plugins)")
    doc = copy.deepcopy(doc)

    name = doc.get("name")
    if name is None or name == "":
        raise ConfigInvalid("missing 'name'")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigInvalid(
            f"invalid network name {name!r}: it must start with a letter or digit and hold "
            "only letters, digits, '_', '.' and '-'"
        )
    version = doc.get("cniVersion")
    if version is None or version == "":
        raise ConfigInvalid("missing 'cniVersion'")
    if not isinstance(version, str):
        raise ConfigInvalid(f"'cniVersion' must be a string, not {version!r}")
    versions = doc.get("cniVersions", [])
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ConfigInvalid("'cniVersions' must be a list of strings")
    try:
        selected = select_version(version, versions)
    except ValueError as err:
        raise ConfigInvalid(str(err)) from None

    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigInvalid("'plugins' must be a non-empty list")
    for index, plugin in enumerate(plugins):
        _check_plugin(index, plugin)

    return NetworkConfig(
        name=name,
        cni_version=selected,
        plugins=plugins,
        raw=doc,
        disable_check=_as_bool(doc, "disableCheck"),
        disable_gc=_as_bool(doc, "disableGC"),
    )


def parse_network(
    data: bytes | str | dict[str, Any], source: str = "", single: bool | None = None
) -> NetworkConfig:
    """Parse and validate one network document; InvalidArgument if it is not valid."""
    try:
        doc = json.loads(data) if isinstance(data, (bytes, str)) else data
        network = validate_network(doc, single)
    except json.JSONDecodeError as err:
        where = f" in {source}" if source else ""
        raise InvalidArgument(f"network config{where} is not valid JSON: {err}",
                              reason="netconf") from None
    except ConfigInvalid as err:
        where = f" {source}" if source else ""
        raise InvalidArgument(f"invalid network config{where}: {err}", reason="netconf") from None
    network.source = source
    return network


def _load_file(path: str) -> NetworkConfig:
    """Read and validate one file; ConfigInvalid on any problem."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigInvalid(f"cannot read: {err.strerror or err}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigInvalid(f"larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigInvalid(f"not valid JSON: {err}") from None
    single = False if path.endswith(".conflist") else None
    network = validate_network(doc, single)
    network.source = path
    return network


def load_network_dir(directory: str) -> NetworkScan:
    """Load every ``.conflist``/``.conf``/``.json`` file in lexical order.

    Invalid files, and later files reusing a network name, are kept in
    ``skipped`` with the reason; a missing directory gives an empty scan.
    """
    scan = NetworkScan(directory=directory)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        scan.skipped.append(SkippedFile(directory, "directory does not exist"))
        return scan
    except OSError as err:
        scan.skipped.append(SkippedFile(directory, f"cannot list: {err.strerror or err}"))
        return scan
    seen: dict[str, str] = {}
    for entry in names:
        if not entry.endswith(CONFIG_EXTENSIONS):
            continue
        path = os.path.join(directory, entry)
        if not os.path.isfile(path):
            continue
        try:
            network = _load_file(path)
        except ConfigInvalid as err:
            scan.skipped.append(SkippedFile(path, str(err)))
            continue
        if network.name in seen:
            scan.skipped.append(SkippedFile(
                path, f"network name {network.name!r} is already defined in {seen[network.name]}"
            ))
            continue
        seen[network.name] = entry
        scan.networks.append(network)
    return scan


def loopback_network() -> NetworkConfig:
    """A built-in network that only brings the pod's ``lo`` up (plugin ``loopback``).

    Attach it to every pod before its main network, as CRI-O does; it is kept
    out of ``deploy/cni`` so admin-supplied configs need not include it.
    """
    return parse_network(
        {"cniVersion": "1.0.0", "name": "peapod-loopback", "plugins": [{"type": "loopback"}]},
        source="<built-in>",
    )
