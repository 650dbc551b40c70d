"""Pod sandbox messages to domain objects (with request validation) and back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from api import api_pb2 as pb
from base.errors import InvalidArgument
from base.netaddr import ip_address
from base.text import check_path, check_text
from cni.capabilities import PortMapping
from cri.convert.userns import to_pb as userns_to_pb
from cri.convert.userns import userns_mode
from cri.convert.validate import choice, object_name, string_map
from sandbox import sysctls as sysctl_mod
from sandbox.cgroup_paths import cgroup_path
from sandbox.pod_config import CONTAINER, NODE, POD, PodConfig, PodMetadata
from sandbox.pod_files import (
    MAX_HOSTNAME_LEN,
    DnsConfig,
    render_resolv_conf,
    validate_hostname,
)
from sandbox.record import NOTREADY, READY, SandboxRecord
from sandbox.store import SandboxFilter

if TYPE_CHECKING:
    from cri.config import Config

_PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}
_MODES = {pb.POD: POD, pb.CONTAINER: CONTAINER, pb.NODE: NODE}
_PB_MODES = {POD: pb.POD, CONTAINER: pb.CONTAINER, NODE: pb.NODE}
_STATES = {pb.SANDBOX_READY: READY, pb.SANDBOX_NOTREADY: NOTREADY}


def metadata(meta: pb.PodSandboxMetadata) -> PodMetadata:
    return PodMetadata(
        name=object_name(meta.name, "PodSandboxConfig.metadata.name"),
        uid=object_name(meta.uid, "PodSandboxConfig.metadata.uid"),
        namespace=object_name(meta.namespace, "PodSandboxConfig.metadata.namespace"),
        attempt=meta.attempt,
    )


def _port_mapping(m: pb.PortMapping) -> PortMapping:
    protocol = choice(pb.Protocol, _PROTOCOLS, m.protocol, "port mapping protocol")
    if not 0 < m.container_port < 65536:
        raise InvalidArgument(
            f"port mapping container_port {m.container_port} is outside 1-65535"
        )
    if not 0 <= m.host_port < 65536:
        raise InvalidArgument(f"port mapping host_port {m.host_port} is outside 0-65535")
    if m.host_ip:
        # No zone: the portmap plugin would skip such a mapping without a word.
        ip_address(m.host_ip, "port mapping host_ip")
    return PortMapping(m.host_port, m.container_port, protocol, m.host_ip)


def _mode(value: int, field: str) -> str:
    return choice(pb.NamespaceMode, _MODES, value, f"namespace_options.{field} mode")


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def pod_config(cfg: pb.PodSandboxConfig, config: Config) -> PodConfig:
    """Validate a PodSandboxConfig and convert it; InvalidArgument names the bad field."""
    meta = metadata(cfg.metadata)
    linux = cfg.linux
    sec = linux.security_context
    ns = sec.namespace_options
    network = _mode(ns.network, "network")
    ipc = _mode(ns.ipc, "ipc")
    pid = _mode(ns.pid, "pid")
    userns = userns_mode(ns, "namespace_options")[1]
    host_network, host_ipc = network == NODE, ipc == NODE
    if userns is not None and (host_network or host_ipc or pid == NODE):
        raise InvalidArgument(
            "namespace_options: a pod in its own user namespace (userns_options mode POD) "
            "cannot use the host's network, IPC or PID namespace, which the host's user "
            "namespace owns"
        )

    if cfg.hostname and not host_network:
        validate_hostname(cfg.hostname)
    elif cfg.hostname:  # ignored (the host's is used), but recorded and shown
        check_text(cfg.hostname, "hostname", MAX_HOSTNAME_LEN)
    if cfg.log_directory:
        check_path(cfg.log_directory, "log_directory")
    dns = None
    if cfg.HasField("dns_config"):
        dns = DnsConfig(
            servers=tuple(cfg.dns_config.servers),
            searches=tuple(cfg.dns_config.searches),
            options=tuple(cfg.dns_config.options),
        )
        render_resolv_conf(dns)  # validates
    mappings = tuple(_port_mapping(m) for m in cfg.port_mappings)
    parent = linux.cgroup_parent
    if parent:
        check_path(parent, "cgroup_parent", absolute=False)
    if parent and parent != "/":
        cgroup_path(parent, config.cgroup_manager)  # validates
    sysctls = dict(linux.sysctls)
    sysctl_mod.validate(sysctls, host_network=host_network, host_ipc=host_ipc)

    security = _as_dict(sec)
    security.pop("namespace_options", None)
    pod = PodConfig(
        metadata=meta,
        hostname=cfg.hostname,
        log_directory=cfg.log_directory,
        dns=dns,
        port_mappings=mappings,
        labels=string_map(cfg.labels, "PodSandboxConfig.labels"),
        annotations=string_map(cfg.annotations, "PodSandboxConfig.annotations"),
        cgroup_parent=parent,
        sysctls=sysctls,
        host_network=host_network,
        host_ipc=host_ipc,
        pid_mode=pid,
        userns=userns,
        security=security,
        overhead=_as_dict(linux.overhead) if linux.HasField("overhead") else {},
        resources=_as_dict(linux.resources) if linux.HasField("resources") else {},
    )
    pod.bandwidth()  # validates the bandwidth annotations
    return pod


# ---- records to messages ----------------------------------------------------


def _pb_metadata(rec: SandboxRecord) -> pb.PodSandboxMetadata:
    m = rec.metadata
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def _pb_state(rec: SandboxRecord) -> int:
    return pb.SANDBOX_READY if rec.state == READY else pb.SANDBOX_NOTREADY


def namespace_option(rec: SandboxRecord) -> pb.NamespaceOption:
    mappings = rec.mappings
    return pb.NamespaceOption(
        network=pb.NODE if rec.host_network else pb.POD,
        ipc=pb.NODE if rec.host_ipc else pb.POD,
        pid=_PB_MODES.get(rec.pid_mode, pb.POD),
        userns_options=userns_to_pb(mappings) if mappings is not None else None,
    )


def to_pb_status(rec: SandboxRecord) -> pb.PodSandboxStatus:
    network = pb.PodSandboxNetworkStatus()
    if rec.ips:
        network.ip = rec.ips[0]
        network.additional_ips.extend(pb.PodIP(ip=ip) for ip in rec.ips[1:])
    return pb.PodSandboxStatus(
        id=rec.id,
        metadata=_pb_metadata(rec),
        state=_pb_state(rec),
        created_at=rec.created_at,
        network=network,
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=namespace_option(rec))
        ),
        labels=rec.labels,
        annotations=rec.annotations,
        runtime_handler=rec.runtime_handler,
    )


def to_pb_sandbox(rec: SandboxRecord) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=rec.id,
        metadata=_pb_metadata(rec),
        state=_pb_state(rec),
        created_at=rec.created_at,
        labels=rec.labels,
        annotations=rec.annotations,
        runtime_handler=rec.runtime_handler,
    )


def verbose_info(rec: SandboxRecord) -> dict[str, str]:
    """PodSandboxStatus's verbose map: one JSON document under "info"."""
    info: dict[str, Any] = {
        "id": rec.id,
        "name": rec.name,
        "state": rec.state,
        "podDir": rec.pod_dir,
        "namespaces": rec.ns_paths,
        "netns": rec.ns_paths.get("net", ""),
        "hostname": rec.hostname,
        "resolvConf": rec.resolv_conf_path,
        "hosts": rec.hosts_path,
        "shm": rec.shm_path,
        "cgroupParent": rec.cgroup_parent,
        "cgroup": rec.cgroup,
        "pidMode": rec.pid_mode,
        "userNamespace": rec.userns,
        "infraPid": rec.infra["pid"] if rec.infra else None,
        "infra": rec.infra,
        "sysctls": rec.sysctls,
        "portMappings": [
            {"hostPort": m.host_port, "containerPort": m.container_port,
             "protocol": m.protocol, "hostIP": m.host_ip}
            for m in rec.port_mappings
        ],
        "ips": rec.ips,
        "cni": [
            {"network": (a.get("network") or {}).get("config", {}).get("name", ""),
             "ifname": (a.get("runtime") or {}).get("ifname", ""),
             "config": (a.get("network") or {}).get("config"),
             "source": (a.get("network") or {}).get("source", ""),
             "result": a.get("result")}
            for a in rec.attachments
        ],
        "pendingNetworkTeardown": rec.pending_network_teardown,
        "networkError": rec.network_error,
        "runtimeHandler": rec.runtime_handler,
        "logDirectory": rec.log_directory,
        "security": rec.security,
    }
    return {"info": json.dumps(info, sort_keys=True)}


def sandbox_filter(flt: pb.PodSandboxFilter) -> SandboxFilter:
    state = None
    if flt.HasField("state"):
        state = choice(pb.PodSandboxState, _STATES, flt.state.state, "filter state")
    labels: Mapping[str, str] = dict(flt.label_selector)
    return SandboxFilter(id=flt.id, state=state, labels=labels)

