"""Configuration: defaults, files, drop-ins, flags and the errors they give."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cri import config as configmod
from cri.config import ConfigError


def test_defaults_without_files(tmp_path: Path) -> None:
    cfg = configmod.load(tmp_path / "absent.yaml", tmp_path / "absent.d")
    assert cfg.listen == "/run/peapod/peapod.sock"
    assert cfg.root == "/var/lib/peapod"
    assert cfg.metrics.address == "127.0.0.1:9539"
    assert cfg.cgroup_manager == "cgroupfs"
    assert cfg.image.default_search_registries == ["docker.io"]


def test_dropins_apply_in_lexical_order_and_merge_mappings(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("root: /a\nimage:\n  max_parallel_downloads: 5\n  registry_timeout: 7\n")
    d = tmp_path / "d"
    d.mkdir()
    (d / "20-b.yaml").write_text("root: /b-late\n")
    (d / "10-a.yaml").write_text("root: /a-early\nimage:\n  max_parallel_downloads: 9\n")
    (d / "README").write_text("not yaml: [")  # ignored: wrong suffix
    cfg = configmod.load(main, d)
    assert cfg.root == "/b-late"
    assert cfg.image.max_parallel_downloads == 9
    assert cfg.image.registry_timeout == 7.0  # kept from the main file


def test_flags_override_files(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("listen: /from/file.sock\nmetrics:\n  address: 127.0.0.1:1\n")
    cfg = configmod.load(
        main, None, {"listen": "/from/flag.sock", "metrics.address": "", "root": None}
    )
    assert cfg.listen == "/from/flag.sock"
    assert cfg.metrics.address == ""
    assert cfg.root == "/var/lib/peapod"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("imag: {}\n", "unknown key 'imag'"),
        (
            "image:\n  max_parallel_downloads: many\n",
            "'image.max_parallel_downloads' must be an integer",
        ),
        ("image:\n  default_search_registries: docker.io\n", "must be a list"),
        ("metrics: 5\n", "'metrics' must be a mapping"),
        ("log_level: loud\n", "must be one of debug, info, warning, error"),
        ("stats:\n  included_pod_metrics: [cpu, cpus]\n",
         "'stats.included_pod_metrics': unknown metric families 'cpus'"),
        ("stats:\n  included_pod_metrics: [all, cpu]\n", "'all' must be alone"),
        ("image:\n  nope: 1\n", "unknown key 'image.nope'"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("root: [\n", "not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        configmod.load(bad, None)
    assert needle in str(err.value)
    assert str(bad) in str(err.value)


def test_error_in_dropin_names_the_dropin(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "50-x.yaml").write_text("shutdown_grace: soon\n")
    with pytest.raises(ConfigError, match=r"50-x\.yaml: key 'shutdown_grace' must be a number"):
        configmod.load(tmp_path / "absent.yaml", d)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        configmod.load(tmp_path / "absent.yaml", None, file_must_exist=True)


def test_rendered_defaults_round_trip(tmp_path: Path) -> None:
    text = configmod.render_yaml(configmod.Config())
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert configmod.load(path, None) == configmod.Config()


def test_every_option_is_documented() -> None:
    text = configmod.render_yaml(configmod.Config(), commented=True)
    for line in text.splitlines():
        assert not line.strip() or line.lstrip().startswith("#"), line
    import dataclasses

    for cls in (configmod.Config, configmod.ImageConfig, configmod.MetricsConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"option {cls.__name__}.{f.name} has no documentation"


def test_deploy_default_config_matches_the_schema() -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "peapod.yaml"
    assert shipped.read_text() == configmod.render_yaml(configmod.Config(), commented=True), (
        "deploy/peapod.yaml is stale: regenerate it with `peapod config --defaults`"
    )
    assert yaml.safe_load(shipped.read_text()) is None  # everything commented out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("image:\n  registry_timeout: 0\n", "'image.registry_timeout' must be greater than 0"),
        (
            "image:\n  max_parallel_downloads: 0\n",
            "'image.max_parallel_downloads' must be at least 1",
        ),
        ("grpc_workers: 0\n", "'grpc_workers' must be at least 1"),
        ("grpc_max_message_bytes: -1\n", "'grpc_max_message_bytes' must be at least 1"),
        ("shutdown_grace: -5\n", "'shutdown_grace' must be at least 0"),
        ("network:\n  plugin_timeout: 0\n", "'network.plugin_timeout' must be greater than 0"),
        ("sandbox:\n  create_timeout: -1\n", "'sandbox.create_timeout' must be greater than 0"),
        ("runtime:\n  pids_limit: -3\n", "'runtime.pids_limit' must be at least 0"),
        (
            "runtime:\n  runtimes:\n    runc:\n      create_timeout: 0\n",
            "'runtime.runtimes.runc.create_timeout' must be greater than 0",
        ),
    ],
)
def test_out_of_range_numbers_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    """A zero timeout or worker count would fail every pull or the start-up obscurely."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        configmod.load(bad, None)
    assert needle in str(err.value)
    assert str(bad) in str(err.value)


def test_out_of_range_flag_names_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="command line: key 'shutdown_grace' must be at least 0"):
        configmod.load(None, None, {"shutdown_grace": -1.0})
