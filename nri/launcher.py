"""Plugins peapod starts itself: found in the plugin directories, started with a socket.

A plugin is an executable named ``<index>-<name>`` (index: two digits). It is started
with one end of a connected socket pair and told which descriptor it is
(``NRI_PLUGIN_SOCKET``), its name (``NRI_PLUGIN_NAME``) and index (``NRI_PLUGIN_IDX``),
as containerd does. Its configuration is ``<config dir>/<index>-<name>.conf``, else
``<config dir>/<name>.conf``, handed over in Configure.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nri.plugin import check_index, check_name

log = logging.getLogger("peapod.nri")

ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Found:
    """A plugin executable found in a plugin directory."""

    idx: str
    base: str
    path: Path
    config: str


def discover(dirs: tuple[str, ...], config_dir: str) -> list[Found]:
    """Every plugin of ``dirs`` (a name in two directories counts from the first)."""
    found: dict[str, Found] = {}
    for directory in dirs:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot read an NRI plugin directory",
                        extra={"dir": directory, "error": exc.strerror})
            continue
        for entry in entries:
            if not entry.is_file() or not os.access(entry.path, os.X_OK):
                continue
            idx, _, base = entry.name.partition("-")
            why = check_index(idx) or check_name(base)
            if why:
                log.warning("skipping an NRI plugin whose file name is not <index>-<name>",
                            extra={"path": entry.path, "error": why})
                continue
            if entry.name not in found:
                found[entry.name] = Found(idx, base, Path(entry.path),
                                          plugin_config(config_dir, idx, base))
    return sorted(found.values(), key=lambda f: (f.idx, f.base))


def plugin_config(config_dir: str, idx: str, base: str) -> str:
    """The plugin's configuration text, "" if it has none."""
    for name in (f"{idx}-{base}.conf", f"{base}.conf"):
        try:
            return (Path(config_dir) / name).read_text()
        except FileNotFoundError:
            continue
    return ""


def spawn(found: Found) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start the plugin with one end of a socket pair; return it and peapod's end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.set_inheritable(False)
    fd = theirs.fileno()
    env = {"NRI_PLUGIN_NAME": found.base, "NRI_PLUGIN_IDX": found.idx,
           "NRI_PLUGIN_SOCKET": str(fd), "PATH": ENV_PATH}
    try:
        proc = subprocess.Popen([str(found.path)], env=env, pass_fds=(fd,),
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours
