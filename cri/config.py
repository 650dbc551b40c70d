"""peapod's configuration: schema, defaults, YAML files, drop-ins and flags.

The schema is a tree of dataclasses (the root ``Config`` here, its sections in
``cri.config_sections``, whose names this module re-exports); every field carries its
documentation in ``metadata["doc"]``. The effective configuration is: defaults, then the main
file, then each ``*.yaml``/``*.yml`` file of the drop-in directory in lexical
order (mappings merge key by key, everything else is replaced), then
command-line flags. Unknown keys and wrong types are errors that name the file
and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cri.config_sections import (
    EventsConfig,
    ImageConfig,
    MetricsConfig,
    NetworkConfig,
    NRIConfig,
    RuntimeConfig,
    RuntimeHandlerConfig,
    SandboxConfig,
    StatsConfig,
    StreamingConfig,
    option,
    section,
)
from oci.stats import metric_catalog

DEFAULT_CONFIG_FILE = Path("/etc/peapod/peapod.yaml")
DEFAULT_CONFIG_DIR = Path("/etc/peapod/peapod.yaml.d")


class ConfigError(Exception):
    """The configuration cannot be used; the message names file and key."""


@dataclass
class Config:
    listen: str = option(
        "/run/peapod/peapod.sock", "Unix socket of the CRI gRPC API (mode 0660)."
    )
    root: str = option(
        "/var/lib/peapod", "Persistent state: the state database and the image store."
    )
    runroot: str = option(
        "/run/peapod", "Runtime state that must not survive a reboot (keep it on tmpfs)."
    )
    log_level: str = option("info", "One of debug, info, warning, error.")
    log_format: str = option("text", "text (key=value lines) or json (one object per line).")
    cgroup_manager: str = option(
        "cgroupfs",
        "cgroupfs or systemd; must match the kubelet's cgroupDriver (reported by RuntimeConfig).",
    )
    grpc_max_message_bytes: int = option(
        80 * 1024 * 1024, "Largest gRPC message accepted or sent (List* responses grow)."
    )
    grpc_workers: int = option(
        100, "Threads serving RPCs; slow calls (pulls, network setup) each hold one."
    )
    shutdown_grace: float = option(
        30.0, "Seconds in-flight RPCs may take to finish after SIGTERM/SIGINT."
    )
    kept_for_retry: float = option(
        300.0,
        "Seconds a pod sandbox or container finished after its RunPodSandbox or "
        "CreateContainer caller's deadline is kept, hidden from List calls, for the kubelet's "
        "retry with the same name and attempt, which receives it. Unclaimed by then, it is "
        "removed (its id never reached the kubelet).",
    )
    metrics: MetricsConfig = section(MetricsConfig, "Prometheus metrics endpoint.")
    image: ImageConfig = section(ImageConfig, "Image pulls and the image store.")
    runtime: RuntimeConfig = section(RuntimeConfig, "Containers: OCI runtimes, conmon, limits.")
    network: NetworkConfig = section(NetworkConfig, "Pod networking through CNI plugins.")
    sandbox: SandboxConfig = section(SandboxConfig, "Pod sandboxes.")
    streaming: StreamingConfig = section(
        StreamingConfig, "The streaming server behind Exec, Attach and PortForward."
    )
    stats: StatsConfig = section(StatsConfig, "Container and pod stats, CRI metrics.")
    events: EventsConfig = section(EventsConfig, "Container events (GetContainerEvents).")
    nri: NRIConfig = section(NRIConfig, "NRI plugins (node resource interface).")

    # ---- derived paths -------------------------------------------------
    @property
    def root_path(self) -> Path:
        return Path(self.root)

    @property
    def runroot_path(self) -> Path:
        return Path(self.runroot)

    @property
    def db_path(self) -> Path:
        return self.root_path / "peapod.db"

    @property
    def image_root(self) -> Path:
        return self.root_path / "images"


LOG_LEVELS = ("debug", "info", "warning", "error")
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": LOG_LEVELS,
    "log_format": ("text", "json"),
    "cgroup_manager": ("cgroupfs", "systemd"),
    "nri.on_timeout": ("proceed", "fail"),
}
# Checks of list options whose items have fixed choices: dotted key -> a function that
# raises ValueError saying what is wrong.
LIST_CHECKS: dict[str, typing.Callable[[Any], None]] = {
    "stats.included_pod_metrics": metric_catalog.check_families,
}
# Lower bounds of numeric options: (section class, field) -> (bound, strict). A zero
# timeout or worker count would otherwise fail every pull, call or pod obscurely.
MINIMUMS: dict[tuple[type, str], tuple[float, bool]] = {
    (Config, "grpc_max_message_bytes"): (1, False),
    (Config, "grpc_workers"): (1, False),
    (Config, "shutdown_grace"): (0, False),
    (Config, "kept_for_retry"): (0, True),
    (ImageConfig, "max_parallel_downloads"): (1, False),
    (ImageConfig, "registry_timeout"): (0, True),
    (RuntimeConfig, "pids_limit"): (0, False),
    (RuntimeConfig, "exec_output_max"): (1, False),
    (RuntimeHandlerConfig, "create_timeout"): (0, True),
    (NetworkConfig, "wait_for_config"): (0, False),
    (NetworkConfig, "plugin_timeout"): (0, True),
    (SandboxConfig, "shm_size"): (1, False),
    (SandboxConfig, "create_timeout"): (0, True),
    (StreamingConfig, "port"): (0, False),
    (StreamingConfig, "idle_timeout"): (0, True),
    (StreamingConfig, "max_sessions"): (1, False),
    (StreamingConfig, "max_pending"): (1, False),
    (StreamingConfig, "token_ttl"): (0, True),
    (StatsConfig, "collection_period"): (0, True),
    (StatsConfig, "walk_budget"): (1, False),
    (EventsConfig, "subscriber_queue"): (1, False),
    (NRIConfig, "plugin_registration_timeout"): (0, True),
    (NRIConfig, "plugin_request_timeout"): (0, True),
}


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class ConfigSource:
    """Where a configuration comes from, kept so SIGHUP and ``peapod status`` can re-read it."""

    file: Path | None = DEFAULT_CONFIG_FILE
    directory: Path | None = DEFAULT_CONFIG_DIR
    overrides: dict[str, Any] = field(default_factory=dict)
    file_must_exist: bool = False

    def load(self) -> Config:
        return load(self.file, self.directory, self.overrides,
                    file_must_exist=self.file_must_exist)  # fmt: skip

    def describe(self) -> list[str]:
        """The files read, in order, then "command line" if flags set options."""
        try:
            files = [str(p) for p in _config_files(self.file, self.directory, False)]
        except OSError:
            files = []
        if any(v is not None for v in self.overrides.values()):
            files.append("command line")
        return files

    def peek(self, dotted: str) -> Any:
        """``dotted``'s value from flags and files read leniently (a file that does not
        parse is skipped, nothing is checked), or None: where to look for a daemon whose
        configuration on disk no longer loads."""
        if self.overrides.get(dotted) is not None:
            return self.overrides[dotted]
        value = None
        try:
            files = _config_files(self.file, self.directory, False)
        except OSError:
            files = []
        for path in files:
            try:
                node: Any = _read_yaml(path)
            except ConfigError:
                continue
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                value = node
        return value


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ; a runtime handler counts as one key."""
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        out: list[str] = []
        for f in dataclasses.fields(old):
            out += changed_keys(getattr(old, f.name), getattr(new, f.name), f"{prefix}{f.name}.")
        return out
    if isinstance(old, dict) and isinstance(new, dict) and all(
        dataclasses.is_dataclass(v) for v in (*old.values(), *new.values())
    ):
        return [f"{prefix}{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return [] if old == new else [prefix.rstrip(".")]


def load(
    config_file: Path | None = None,
    config_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    file_must_exist: bool = False,
) -> Config:
    """Build the effective configuration.

    ``overrides`` maps dotted keys (``"metrics.address"``) to values from flags.
    """
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for path in _config_files(config_file, config_dir, file_must_exist):
        data = _read_yaml(path)
        _merge(merged, data, origins, str(path), ())
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        parts = key.split(".")
        node = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        origins[key] = "command line"
    cfg: Config = _build(Config, merged, origins, ())
    _check_runtimes(cfg, origins)
    return cfg


def _check_runtimes(cfg: Config, origins: dict[str, str]) -> None:
    rt = cfg.runtime
    if rt.default_runtime not in rt.runtimes:
        raise ConfigError(
            f"{_where(origins, 'runtime.default_runtime')}: key 'runtime.default_runtime' names "
            f"{rt.default_runtime!r}, which is not in runtime.runtimes "
            f"({', '.join(sorted(rt.runtimes)) or 'empty'})"
        )
    mode = cfg.nri.socket_mode
    if not (mode.isdigit() and set(mode) <= set("01234567") and int(mode, 8) <= 0o777):
        raise ConfigError(
            f"{_where(origins, 'nri.socket_mode')}: key 'nri.socket_mode' must be octal "
            f"permission bits such as 0600, got {mode!r}"
        )
    if 0 <= rt.log_size_max < 8192:
        raise ConfigError(
            f"{_where(origins, 'runtime.log_size_max')}: key 'runtime.log_size_max' must be -1 "
            f"or at least 8192, got {rt.log_size_max}"
        )


def _config_files(
    config_file: Path | None, config_dir: Path | None, must_exist: bool
) -> list[Path]:
    files: list[Path] = []
    if config_file is not None:
        if config_file.exists():
            files.append(config_file)
        elif must_exist:
            raise ConfigError(f"config file {config_file} does not exist")
    if config_dir is not None and config_dir.is_dir():
        files.extend(
            sorted(p for p in config_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        )
    return files


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of options")
    return data


def _merge(
    into: dict[str, Any], data: dict[str, Any], origins: dict[str, str], src: str,
    prefix: tuple[str, ...],
) -> None:
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origins, src, path)
        else:
            into[key] = value
            _mark(origins, value, src, path)


def _mark(origins: dict[str, str], value: Any, src: str, path: tuple[str, ...]) -> None:
    origins[".".join(path)] = src
    if isinstance(value, dict):
        for key, sub in value.items():
            _mark(origins, sub, src, (*path, str(key)))


def _where(origins: dict[str, str], dotted: str) -> str:
    probe = dotted
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return "configuration"


def _build(cls: type, data: Any, origins: dict[str, str], path: tuple[str, ...]) -> Any:
    dotted = ".".join(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_where(origins, dotted)}: key '{dotted}' must be a mapping, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = ".".join((*path, str(key)))
            known = ", ".join(sorted(fields))
            raise ConfigError(
                f"{_where(origins, where)}: unknown key '{where}' (known here: {known})"
            )
    values: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        key_path = (*path, name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, data[name], origins, key_path)
        else:
            values[name] = _coerce(hint, data[name], origins, ".".join(key_path))
    obj = cls(**values)
    for name in fields:
        dotted_name = ".".join((*path, name))
        choices = CHOICES.get(dotted_name)
        if choices and getattr(obj, name) not in choices:
            raise ConfigError(
                f"{_where(origins, dotted_name)}: key '{dotted_name}' must be one of "
                f"{', '.join(choices)}, got {getattr(obj, name)!r}"
            )
        list_check = LIST_CHECKS.get(dotted_name)
        if list_check is not None:
            try:
                list_check(getattr(obj, name))
            except ValueError as exc:
                raise ConfigError(
                    f"{_where(origins, dotted_name)}: key '{dotted_name}': {exc}"
                ) from None
        bound = MINIMUMS.get((cls, name))
        if bound is not None:
            value, (low, strict) = getattr(obj, name), bound
            if value < low or (strict and value == low):
                low_text = f"{low:g}"
                rule = f"greater than {low_text}" if strict else f"at least {low_text}"
                raise ConfigError(
                    f"{_where(origins, dotted_name)}: key '{dotted_name}' must be {rule}, "
                    f"got {value!r}"
                )
    return obj


def _coerce(hint: Any, value: Any, origins: dict[str, str], dotted: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"{_where(origins, dotted)}: key '{dotted}' must be {expected}, got {value!r}"
        )

    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise bad("a list")
        return [_coerce(item, v, origins, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _key_t, val_t = typing.get_args(hint)
        if not isinstance(value, dict):
            raise bad("a mapping")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise bad("a mapping with string keys")
            if dataclasses.is_dataclass(val_t):
                out[k] = _build(val_t, v, origins, (*dotted.split("."), k))
            else:
                out[k] = _coerce(val_t, v, origins, f"{dotted}.{k}")
        return out
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
        non_none = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(non_none[0], value, origins, dotted)
    raise bad(str(hint))


# ---------------------------------------------------------------- rendering


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as plain data (the shape of the YAML file)."""
    return dataclasses.asdict(cfg)


def render_yaml(cfg: Any, commented: bool = False) -> str:
    """YAML text of ``cfg`` with each option's documentation above it.

    With ``commented`` every option line is commented out, giving a file that
    documents the defaults without pinning them.
    """
    lines: list[str] = []
    _render(cfg, lines, 0, commented)
    return "\n".join(lines) + "\n"


def _render(obj: Any, lines: list[str], depth: int, commented: bool) -> None:
    indent = "  " * depth
    hash_ = "# " if commented else ""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        doc = f.metadata.get("doc", "")
        for doc_line in _wrap(doc, 88 - len(indent)):
            lines.append(f"{indent}# {doc_line}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{hash_}{f.name}:")
            _render(value, lines, depth + 1, commented)
        elif isinstance(value, dict) and value and all(
            dataclasses.is_dataclass(v) for v in value.values()
        ):
            lines.append(f"{indent}{hash_}{f.name}:")
            for key, sub in value.items():
                lines.append(f"{indent}  {hash_}{key}:")
                _render(sub, lines, depth + 2, commented)
        else:
            dumped = yaml.safe_dump(
                {f.name: value}, default_flow_style=True, sort_keys=False, width=1000
            ).strip()
            if dumped.startswith("{") and dumped.endswith("}"):
                dumped = dumped[1:-1]
            lines.append(f"{indent}{hash_}{dumped}")
        if depth == 0:
            lines.append("")


def _wrap(text: str, width: int) -> list[str]:
    words = text.split()
    out: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out
