"""An attachment: one network attached to one pod, as a serialisable record.

It keeps the exact network config used for ADD, so a DEL after a restart runs
the same plugins even if the file on disk changed. peapod's state DB stores it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from base.errors import DataLoss, PeapodError
from cni.netconf import NetworkConfig
from cni.result import Interface, IPConfig, Result, ResultInvalid, parse_result
from cni.runtime_conf import RuntimeConf

FORMAT = "peapod.cni.attachment/v1"


@dataclass
class Attachment:
    """A network, the runtime parameters used with it, and the ADD result."""

    network: NetworkConfig
    runtime: RuntimeConf
    result: Result

    @property
    def network_name(self) -> str:
        return self.network.name

    @property
    def raw_result(self) -> dict[str, Any]:
        """The final ADD result exactly as the last plugin printed it."""
        return self.result.raw

    @property
    def key(self) -> tuple[str, str]:
        """The spec's identity of an attachment: (container id, ifname)."""
        return self.runtime.container_id, self.runtime.ifname

    def _in_sandbox(self, ip: IPConfig) -> bool:
        if ip.interface is None:
            return True
        interfaces = self.result.interfaces
        return 0 <= ip.interface < len(interfaces) and bool(interfaces[ip.interface].sandbox)

    def pod_ips(self) -> list[str]:
        """Addresses inside the pod: first IPv4, then first IPv6, then the others."""
        inside = [ip for ip in self.result.ips if self._in_sandbox(ip)]
        ordered: list[IPConfig] = []
        for family in (4, 6):
            first = next((ip for ip in inside if ip.version == family), None)
            if first is not None:
                ordered.append(first)
        ordered += [ip for ip in inside if ip not in ordered]
        addresses: list[str] = []
        for ip in ordered:
            text = str(ip.address.ip)
            if text not in addresses:
                addresses.append(text)
        return addresses

    def container_interface(self) -> Interface | None:
        """The interface in the pod's netns named ``ifname`` (else the first one there)."""
        inside = [i for i in self.result.interfaces if i.sandbox]
        for interface in inside:
            if interface.name == self.runtime.ifname:
                return interface
        return inside[0] if inside else None

    def mac(self) -> str:
        """MAC address of the pod's interface, or "" if the result has none."""
        interface = self.container_interface()
        return interface.mac if interface else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "network": self.network.to_dict(),
            "runtime": self.runtime.to_dict(),
            "result": self.result.raw,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attachment:
        """Rebuild from ``to_dict`` output; DataLoss if the record is unusable."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}, expected {FORMAT}")
            network = NetworkConfig.from_dict(data["network"])
            runtime = RuntimeConf.from_dict(data["runtime"])
            result = parse_result(data["result"], network.cni_version)
        except (PeapodError, ResultInvalid, KeyError, TypeError, ValueError,
                AttributeError) as err:
            detail = err.message if isinstance(err, PeapodError) else f"{type(err).__name__}: {err}"
            raise DataLoss(f"stored CNI attachment is unreadable: {detail}",
                           reason="attachment") from err
        return cls(network, runtime, result)

    @classmethod
    def from_json(cls, text: str | bytes) -> Attachment:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataLoss(f"stored CNI attachment is not valid JSON: {err}",
                           reason="attachment") from err
        if not isinstance(data, dict):
            raise DataLoss("stored CNI attachment is not a JSON object", reason="attachment")
        return cls.from_dict(data)
