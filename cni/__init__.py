"""A client for the Container Network Interface (CNI) spec, versions 0.1.0 to 1.1.0."""

from cni.attachment import Attachment
from cni.capabilities import PortMapping, bandwidth, port_mappings
from cni.client import CNIClient
from cni.netconf import (
    NetworkConfig,
    NetworkScan,
    load_network_dir,
    loopback_network,
    parse_network,
)
from cni.plugin_exec import PluginFailure, plugin_failure
from cni.result import Result, VersionInfo
from cni.runtime_conf import RuntimeConf, k8s_args

__all__ = [
    "Attachment",
    "CNIClient",
    "NetworkConfig",
    "NetworkScan",
    "PluginFailure",
    "PortMapping",
    "Result",
    "RuntimeConf",
    "VersionInfo",
    "bandwidth",
    "k8s_args",
    "load_network_dir",
    "loopback_network",
    "parse_network",
    "plugin_failure",
    "port_mappings",
]
