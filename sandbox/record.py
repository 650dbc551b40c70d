"""The stored state of one pod sandbox, and what its containers inherit from it.

A ``SandboxRecord`` is what peapod keeps in the ``sandboxes`` table (as JSON)
and in its in-memory index. Records are treated as immutable snapshots: a
change makes a new record with ``dataclasses.replace`` and stores it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from base.errors import DataLoss
from cni.capabilities import PortMapping
from sandbox.facts import SandboxFacts
from sandbox.idmappings import UserNamespaceMappings
from sandbox.pod_config import POD, PodMetadata
from sandbox.pod_files import DnsConfig

CREATING = "creating"  # being built; never shown to callers
READY = "ready"
NOTREADY = "notready"

FORMAT = 1


@dataclass(frozen=True)
class SandboxRecord:
    """Everything peapod knows about one pod sandbox.

    ``attachments`` holds one entry per CNI network (older records: the
    built-in loopback network first): the
    ``cni.Attachment`` dict once ADD succeeded, or the same shape with
    ``result`` None while ADD is pending, so DEL can always be run with the
    exact config used. It is emptied once DEL succeeded.
    """

    id: str
    name: str
    metadata: PodMetadata
    state: str
    created_at: int  # unix nanoseconds
    runtime_handler: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_directory: str = ""
    hostname: str = ""
    dns: DnsConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    pid_mode: str = POD
    sysctls: dict[str, str] = field(default_factory=dict)
    pod_dir: str = ""
    ns_paths: dict[str, str] = field(default_factory=dict)  # kind -> pinned nsfs file
    userns: dict[str, Any] | None = None  # UserNamespaceMappings.to_record(); None: host's
    shm_path: str = ""  # the pod's tmpfs; empty with host IPC
    cgroup_parent: str = ""  # in the cgroup driver's syntax; containers go under it
    cgroup: dict[str, Any] | None = None  # sandbox.cgroups.PodCgroup.to_record()
    infra: dict[str, Any] | None = None  # sandbox.infra.InfraProcess.to_record()
    attachments: list[dict[str, Any]] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)  # primary first
    security: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    pending_network_teardown: bool = False
    network_error: str = ""  # why the last network teardown failed

    # ---- paths of the pod files -----------------------------------------
    def _file(self, name: str) -> str:
        return str(Path(self.pod_dir) / name) if self.pod_dir else ""

    @property
    def hostname_path(self) -> str:
        return self._file("hostname")

    @property
    def resolv_conf_path(self) -> str:
        return self._file("resolv.conf")

    @property
    def hosts_path(self) -> str:
        return self._file("hosts")

    @property
    def pidns_path(self) -> str:
        """The infra process's PID namespace (pid mode POD), else empty."""
        if self.infra is None or self.pid_mode != POD:
            return ""
        return f"/proc/{int(self.infra['pid'])}/ns/pid"

    @property
    def mappings(self) -> UserNamespaceMappings | None:
        """The pod's user namespace mappings, None for a pod in the host's."""
        return UserNamespaceMappings.from_record(self.userns) if self.userns else None

    def facts(self) -> SandboxFacts:
        """What a container created in this pod inherits from it."""
        return SandboxFacts(
            hostname=self.hostname,
            netns_path=self.ns_paths.get("net", ""),
            ipcns_path=self.ns_paths.get("ipc", ""),
            utsns_path=self.ns_paths.get("uts", ""),
            pidns_path=self.pidns_path,
            userns_path=self.ns_paths.get("user", ""),
            userns=self.mappings,
            host_network=self.host_network,
            host_ipc=self.host_ipc,
            host_pid=self.host_pid,
            resolv_conf_path=self.resolv_conf_path,
            hosts_path=self.hosts_path,
            hostname_path=self.hostname_path,
            shm_path=self.shm_path,
            cgroup_parent=self.cgroup_parent,
            sysctls=dict(self.sysctls),
        )

    # ---- serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = FORMAT
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxRecord:
        """Rebuild from ``to_dict`` output; DataLoss if it is unusable."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown record format {data.get('format')!r}")
            values = {k: v for k, v in data.items() if k != "format"}
            values["metadata"] = PodMetadata(**values["metadata"])
            dns = values.get("dns")
            values["dns"] = (
                None
                if dns is None
                else DnsConfig(
                    servers=tuple(dns["servers"]),
                    searches=tuple(dns["searches"]),
                    options=tuple(dns["options"]),
                )
            )
            values["port_mappings"] = [PortMapping(**m) for m in values.get("port_mappings", [])]
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataLoss(
                f"stored pod sandbox record is unreadable: {type(exc).__name__}: {exc}"
            ) from exc

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataLoss(f"stored pod sandbox record is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DataLoss("stored pod sandbox record is not a JSON object")
        return cls.from_dict(data)
