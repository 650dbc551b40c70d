"""``peapod status``: the node operator's view, gathered without a CRI client.

Sources, all readable whether the daemon runs or not:

* ``<root>/status.json`` (``cri.status_file``): the daemon's pid, version, config
  files, runtime handlers with their features, and its reloads. The daemon counts as
  running only if that pid still runs with the same start time, and as serving if
  its socket also accepts a connection.
* the state database, opened read-only (SQLite in WAL mode lets a reader in beside
  the live writer; a database closed cleanly is read as immutable, creating no
  files): pods, containers and images by state, and its size on disk.
* the CNI network directory, checked as the daemon's Status does, with the network
  settings the daemon runs with (the configuration's when it is down).

Exit status: 0 serving, 1 running but not serving (starting, stopping, not
answering), 3 not running.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from cni import CNIClient
from cri import __version__, status_file
from cri.config import Config, ConfigError, ConfigSource
from oci.container.runtimes import probe_features, resolve_binary
from sandbox.network import PodNetwork

SERVING, NOT_SERVING, NOT_RUNNING = "serving", "running, not serving", "not running"
EXIT_CODES = {SERVING: 0, NOT_SERVING: 1, NOT_RUNNING: 3}


def gather(source: ConfigSource) -> dict[str, Any]:
    """Everything ``peapod status`` reports, as plain data.

    A configuration that no longer loads is reported, and the daemon looked for where
    its files still say (``root``, ``listen``), else at the defaults.
    """
    config_error = ""
    try:
        cfg = source.load()
    except ConfigError as exc:
        config_error = str(exc)
        cfg = Config()
        cfg.root = str(source.peek("root") or cfg.root)
        cfg.listen = str(source.peek("listen") or cfg.listen)
    path = status_file.path_for(cfg.root_path)
    doc = status_file.read(path)
    daemon = _daemon(doc, path, cfg.listen)
    live = doc if daemon["state"] != NOT_RUNNING else None
    return {
        "peapod": __version__,
        "daemon": daemon,
        "config_error": config_error,
        "config_sources": live["config_sources"] if live else source.describe(),
        "log_level": live["log_level"] if live else cfg.log_level,
        "seccomp_profile": (live["seccomp_profile"] if live else cfg.runtime.seccomp_profile)
        or "built-in",
        "runtime_handlers": live["runtime_handlers"] if live else _configured_handlers(cfg),
        "network": _network(live["network"] if live else _network_settings(cfg)),
        **_database(cfg.db_path),
        "reloads": doc.get("reloads", []) if doc else [],
    }


def exit_code(report: dict[str, Any]) -> int:
    return EXIT_CODES[report["daemon"]["state"]]


def _daemon(doc: dict[str, Any] | None, path: Path, listen: str) -> dict[str, Any]:
    if doc is None:
        return {"state": NOT_RUNNING, "detail": f"no status file at {path}: not started with "
                "this root since it was installed", "status_file": str(path)}  # fmt: skip
    out: dict[str, Any] = {
        "pid": doc["pid"], "version": doc["version"], "socket": doc["listen"],
        "started_at": doc["started_at"], "updated_at": doc["updated_at"],
        "status_file": str(path),
    }  # fmt: skip
    if doc["state"] == status_file.STOPPED:
        error = f" after an error: {doc['error']}" if doc.get("error") else ""
        return {**out, "state": NOT_RUNNING,
                "detail": f"stopped at {_when(doc['updated_at'])}{error}"}  # fmt: skip
    if not status_file.alive(doc):
        return {**out, "state": NOT_RUNNING, "detail": f"pid {doc['pid']} is gone without "
                f"stopping cleanly (killed, crashed or rebooted); last seen "
                f"{doc['state']} at {_when(doc['updated_at'])}"}  # fmt: skip
    if doc["state"] != status_file.SERVING:
        return {**out, "state": NOT_SERVING, "detail": doc["state"]}
    if not _accepts(doc["listen"]):
        return {**out, "state": NOT_SERVING,
                "detail": f"its socket {doc['listen']} does not accept connections"}
    detail = f"up {_duration(time.time() - doc['started_at'])}"
    if doc["listen"] != listen:
        detail += f" (this configuration's socket is {listen})"
    return {**out, "state": SERVING, "detail": detail}


def _accepts(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _configured_handlers(cfg: Config) -> list[dict[str, Any]]:
    """The handlers the configuration names, features asked of each runtime here."""
    out = []
    rt = cfg.runtime
    for name in [rt.default_runtime, *sorted(n for n in rt.runtimes if n != rt.default_runtime)]:
        h = rt.runtimes.get(name)
        if h is None:
            continue
        path = resolve_binary(h.runtime_path or name)
        found = probe_features(path)
        out.append({"name": name, "default": name == rt.default_runtime, "runtime_path": path,
                    "features": {"recursive_read_only_mounts": found.recursive_read_only_mounts,
                                 "user_namespaces": found.user_namespaces}})  # fmt: skip
    return out


def _network_settings(cfg: Config) -> dict[str, Any]:
    net = cfg.network
    return {"network_dir": net.network_dir, "plugin_dirs": list(net.plugin_dirs),
            "default_network": net.default_network, "plugin_timeout": net.plugin_timeout}


def _network(settings: dict[str, Any]) -> dict[str, Any]:
    client = CNIClient(settings["plugin_dirs"], plugin_timeout=settings["plugin_timeout"])
    network = PodNetwork(client, settings["network_dir"], settings["default_network"])
    ready, reason, message = network.ready()
    return {"ready": ready, "reason": reason, "message": message,
            "network_dir": settings["network_dir"]}  # fmt: skip


def _database(db: Path) -> dict[str, Any]:
    files = {p.name: p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
             if p.exists()}  # fmt: skip
    out: dict[str, Any] = {
        "database": {"path": str(db), "bytes": sum(files.values()), "files": files, "error": ""},
        "pods": {}, "containers": {}, "images": 0,
    }  # fmt: skip
    if db.name not in files:
        out["database"]["error"] = "no database yet"
        return out
    # With a WAL, read beside the writer; without one (the daemon closed the database
    # cleanly) the file is complete, and immutable=1 leaves no -wal/-shm files behind.
    mode = "mode=ro" if f"{db.name}-wal" in files else "immutable=1"
    try:
        conn = sqlite3.connect(f"file:{db}?{mode}", uri=True, timeout=5)
        try:
            for table, key in (("sandboxes", "pods"), ("containers", "containers")):
                rows = conn.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")
                out[key] = {str(state): int(n) for state, n in rows}
            out["images"] = int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        out["database"]["error"] = f"cannot read: {exc}"
    return out


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d}d{h}h{m}m" if d else f"{h}h{m}m{s % 60}s" if h else f"{m}m{s % 60}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
    return f"{total} ({parts})" if parts else "0"


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    d = report["daemon"]
    version = f"peapod {d['version']}" if "version" in d else "peapod"
    where = f" on {d['socket']} (pid {d['pid']})" if d["state"] == SERVING else ""
    lines = [f"daemon:      {version} {d['state']}{where}: {d['detail']}"]
    lines.append(f"config:      {', '.join(report['config_sources']) or 'defaults only'}")
    if report["config_error"]:
        lines.append(f"             ERROR, the files no longer load: {report['config_error']}")
    lines.append(f"log level:   {report['log_level']}")
    for i, h in enumerate(report["runtime_handlers"]):
        feats = h.get("features")
        names = [k.replace("_", " ") for k, v in (feats or {}).items() if v]
        text = ", ".join(names) if feats is not None else "features not probed yet"
        default = " (default)" if h["default"] else ""
        lines.append(f"{'handlers:' if i == 0 else '':<13}{h['name']}{default}: "
                     f"{h['runtime_path']}; {text or 'no optional features'}")  # fmt: skip
    lines.append(f"seccomp:     RuntimeDefault profile {report['seccomp_profile']}")
    net = report["network"]
    state = "ready" if net["ready"] else f"NOT READY ({net['reason']})"
    lines.append(f"network:     {state}: {net['message']}")
    lines.append(f"pods:        {_counts(report['pods'])}")
    lines.append(f"containers:  {_counts(report['containers'])}")
    lines.append(f"images:      {report['images']}")
    db = report["database"]
    files = ", ".join(f"{name} {_size(n)}" for name, n in db["files"].items())
    text = f"{db['path']}: {_size(db['bytes'])}" + (f" ({files})" if files else "")
    lines.append(f"database:    {text}" + (f"; {db['error']}" if db["error"] else ""))
    if not report["reloads"]:
        lines.append("reloads:     none")
    for i, r in enumerate(reversed(report["reloads"])):
        if r["ok"]:
            text = f"ok: applied {', '.join(r['applied']) or 'nothing (no change)'}"
            if r["needs_restart"]:
                text += f"; changed but needing a restart: {', '.join(r['needs_restart'])}"
        else:
            text = f"FAILED, running configuration kept: {r['error']}"
        lines.append(f"{'reloads:' if i == 0 else '':<13}{_when(r['at'])} {text}")
    return "\n".join(lines) + "\n"
