"""Building what one plugin invocation receives: stdin config and environment."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cni.capabilities import runtime_config_for
from cni.netconf import NetworkConfig
from cni.plugin_exec import base_env
from cni.runtime_conf import RuntimeConf

ATTACHMENT_COMMANDS = ("ADD", "DEL", "CHECK")
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
# libcni also sends the name an earlier draft of the spec used (containernetworking/cni#1101).
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"


def request_config(
    network: NetworkConfig,
    plugin: Mapping[str, Any],
    command: str,
    runtime: RuntimeConf | None = None,
    prev_result: Mapping[str, Any] | None = None,
    valid_attachments: Iterable[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The JSON object (as a dict) sent on stdin for one plugin run."""
    conf = copy.deepcopy(dict(plugin))
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    for key in [k for k in conf if k.startswith("cni.dev/")]:
        del conf[key]
    if command in ATTACHMENT_COMMANDS:
        conf.pop("capabilities", None)
        conf.pop("prevResult", None)
        if runtime is not None:
            runtime_config = runtime_config_for(plugin, runtime.capability_args)
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        if prev_result is not None:
            conf["prevResult"] = copy.deepcopy(dict(prev_result))
    if command == "GC":
        items = [{"containerID": c, "ifname": i} for c, i in valid_attachments or ()]
        conf[VALID_ATTACHMENTS_KEY] = items
        conf[LEGACY_ATTACHMENTS_KEY] = copy.deepcopy(items)
    return conf


def encode(conf: Mapping[str, Any]) -> bytes:
    return json.dumps(conf).encode()


def plugin_env(command: str, plugin_dirs: Sequence[str],
               runtime: RuntimeConf | None = None) -> dict[str, str]:
    """The environment for one plugin run.

    On DEL a netns path that no longer exists is passed as empty, which the
    spec allows and tells the plugin to clean up what it can.
    """
    env = base_env()
    env["CNI_COMMAND"] = command
    env["CNI_PATH"] = os.pathsep.join(plugin_dirs)
    if runtime is not None:
        netns = runtime.netns
        if command == "DEL" and netns and not os.path.exists(netns):
            netns = ""
        env["CNI_CONTAINERID"] = runtime.container_id
        env["CNI_NETNS"] = netns
        env["CNI_IFNAME"] = runtime.ifname
        env["CNI_ARGS"] = runtime.cni_args()
    return env
