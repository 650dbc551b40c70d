"""The ``peapod`` command: ``run``, ``status``, ``config``, ``unit`` and ``version``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cri  # noqa: F401 - sets GRPC_ENABLE_FORK_SUPPORT before grpc is imported
from cri import __version__
from cri import config as configmod

# flag -> (dotted config key, help)
FLAGS: dict[str, tuple[str, str]] = {
    "--listen": ("listen", "unix socket for the CRI API"),
    "--root": ("root", "directory for persistent state and images"),
    "--runroot": ("runroot", "directory for runtime state (tmpfs)"),
    "--registries-conf": ("image.registries_conf", "containers-registries.conf(5) file"),
    "--registries-conf-dir": ("image.registries_conf_dir", "registries.conf drop-in directory"),
    "--metrics-address": ("metrics.address", "HOST:PORT for /metrics; empty disables"),
    "--log-level": ("log_level", "debug, info, warning or error"),
    "--log-format": ("log_format", "text or json"),
    "--cgroup-manager": ("cgroup_manager", "cgroupfs or systemd"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peapod", description="peapod: a Kubernetes container runtime (CRI v1)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the CRI API")
    status = sub.add_parser(
        "status", help="report on the daemon of this configuration (no CRI client needed)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("config", help="print the effective configuration")
    show.add_argument(
        "--defaults", action="store_true",
        help="print every option with its default, commented out (a config file template)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    for p in (run, status, show):
        p.add_argument(
            "--config", type=Path, default=configmod.DEFAULT_CONFIG_FILE,
            help=f"main config file (default {configmod.DEFAULT_CONFIG_FILE})",
        )
        p.add_argument(
            "--config-dir", type=Path, default=configmod.DEFAULT_CONFIG_DIR,
            help="drop-in directory, *.yaml applied in lexical order "
            f"(default {configmod.DEFAULT_CONFIG_DIR})",
        )
        for flag, (_key, help_text) in FLAGS.items():
            p.add_argument(flag, help=help_text)
    sub.add_parser("version", help="print the version")
    sub.add_parser("unit", help="print a systemd unit that runs this installation's peapod")
    return parser


def _source(args: argparse.Namespace) -> configmod.ConfigSource:
    overrides: dict[str, Any] = {
        key: getattr(args, flag[2:].replace("-", "_")) for flag, (key, _) in FLAGS.items()
    }
    explicit = args.config != configmod.DEFAULT_CONFIG_FILE
    return configmod.ConfigSource(args.config, args.config_dir, overrides, explicit)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"peapod {__version__}\nCRI API v1")
        return 0
    if args.command == "unit":
        from cri import unit

        try:
            sys.stdout.write(unit.render())
        except OSError as exc:
            print(f"peapod: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "config" and args.defaults:
        sys.stdout.write(configmod.render_yaml(configmod.Config(), commented=True))
        return 0
    source = _source(args)
    if args.command == "status":
        return _status(source, args.json)
    try:
        cfg = source.load()
    except configmod.ConfigError as exc:
        print(f"peapod: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        if args.json:
            print(json.dumps(configmod.to_dict(cfg), indent=2))
        else:
            sys.stdout.write(configmod.render_yaml(cfg))
        return 0
    return _run(cfg, source)


def _status(source: configmod.ConfigSource, as_json: bool) -> int:
    from cri import status_report

    report = status_report.gather(source)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if as_json
                     else status_report.render(report))  # fmt: skip
    return status_report.exit_code(report)


def _run(cfg: configmod.Config, source: configmod.ConfigSource) -> int:
    from base.errors import PeapodError
    from cri import logs
    from cri.sd_notify import Notifier

    notifier = Notifier.from_environment()  # before any child process inherits it
    logs.setup(cfg.log_level, cfg.log_format)
    from cri.daemon import Daemon

    try:
        daemon = Daemon(cfg, source, notifier)
        daemon.run()
    except PeapodError as exc:
        print(f"peapod: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
