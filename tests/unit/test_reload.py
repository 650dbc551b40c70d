"""SIGHUP's building blocks: config diff and sources, the handler swap, the reloader."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from base.errors import InvalidArgument
from cri import config as configmod
from cri.config import Config, ConfigSource, RuntimeHandlerConfig, changed_keys
from cri.reload import HISTORY, Reloader, merged
from oci.container import runtimes
from oci.container.runtimes import HandlerFeatures, RuntimeHandler, RuntimeHandlers


def handler(name: str, path: str = "/usr/sbin/runc") -> RuntimeHandler:
    return RuntimeHandler(name, path, f"/run/{name}", "/usr/bin/conmon", {}, 10.0)


def test_replace_swaps_handlers_and_default_and_forgets_changed_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probed: list[str] = []

    def probe(path: str) -> HandlerFeatures:
        probed.append(path)
        return HandlerFeatures(recursive_read_only_mounts=True)

    monkeypatch.setattr(runtimes, "probe_features", probe)
    table = RuntimeHandlers({"runc": handler("runc"), "crun": handler("crun", "/c")}, "runc")
    table.features("runc")
    table.features("crun")
    table.replace({"runc": handler("runc"), "crun": handler("crun", "/c2"),
                   "kata": handler("kata", "/k")}, "crun")  # fmt: skip
    assert table.names() == ["crun", "kata", "runc"]
    assert table.get("").name == "crun" and table.get("kata").runtime_path == "/k"
    table.features("runc")  # unchanged: still cached
    table.features("crun")  # changed: probed again
    assert probed == ["/usr/sbin/runc", "/c", "/c2"]


def test_replace_with_a_bad_default_changes_nothing() -> None:
    table = RuntimeHandlers({"runc": handler("runc")}, "runc")
    with pytest.raises(InvalidArgument):
        table.replace({"crun": handler("crun")}, "runc")
    assert table.names() == ["runc"]


def test_changed_keys_names_options_and_handlers() -> None:
    old = Config()
    new = Config(log_level="debug")
    new.runtime.runtimes["kata"] = RuntimeHandlerConfig(runtime_path="/k")
    new.runtime.runtimes["crun"] = RuntimeHandlerConfig(runtime_path="/c")
    new.metrics.address = ""
    assert changed_keys(old, new) == [
        "log_level", "metrics.address", "runtime.runtimes.crun", "runtime.runtimes.kata"]
    assert changed_keys(old, Config()) == []


def test_merged_takes_only_the_reloadable_options() -> None:
    running = Config()
    loaded = Config(log_level="error", listen="/elsewhere.sock", grpc_workers=3)
    loaded.runtime.seccomp_profile = "/p.json"
    loaded.runtime.pids_limit = 5
    loaded.runtime.runtimes = {"kata": RuntimeHandlerConfig()}
    loaded.runtime.default_runtime = "kata"
    got = merged(running, loaded)
    assert (got.log_level, got.runtime.seccomp_profile, got.runtime.default_runtime) == (
        "error", "/p.json", "kata")
    assert list(got.runtime.runtimes) == ["kata"]
    assert (got.listen, got.grpc_workers, got.runtime.pids_limit) == (
        running.listen, running.grpc_workers, 0)


def test_source_describes_the_files_read_and_flags(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("log_level: info\n")
    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "20-b.yaml").write_text("{}\n")
    (drop / "10-a.yml").write_text("{}\n")
    (drop / "notes.txt").write_text("")
    assert ConfigSource(main, drop).describe() == [str(main), str(drop / "10-a.yml"),
                                                   str(drop / "20-b.yaml")]  # fmt: skip
    flags = ConfigSource(tmp_path / "absent.yaml", None, {"root": "/r", "listen": None})
    assert flags.describe() == ["command line"]
    assert flags.load().root == "/r"


@dataclass
class FakeServices:
    config: Config
    applied: list[Config] = field(default_factory=list)
    refuse: str = ""

    def reconfigure(self, config: Config) -> None:
        if self.refuse:
            raise InvalidArgument(self.refuse)
        self.applied.append(config)
        self.config = config


@pytest.fixture
def root_level() -> Iterator[None]:
    before = logging.getLogger().level
    yield
    logging.getLogger().setLevel(before)


def reloader(tmp_path: Path, doc: dict[str, Any], services: FakeServices) -> Reloader:
    (tmp_path / "peapod.yaml").write_text(yaml.safe_dump(doc))
    return Reloader(ConfigSource(tmp_path / "peapod.yaml", None), services)  # type: ignore[arg-type]


def test_reload_applies_reloadable_keys_and_lists_the_rest(
    tmp_path: Path, root_level: None
) -> None:
    services = FakeServices(Config())
    r = reloader(tmp_path, {"log_level": "error", "grpc_workers": 4}, services)
    event = r.reload()
    assert event.ok and event.applied == ("log_level",) and event.needs_restart == ("grpc_workers",)
    assert services.config.log_level == "error" and services.config.grpc_workers == 100
    assert logging.getLogger().level == logging.ERROR
    assert r.history == [event]


def test_reload_of_a_broken_file_keeps_everything(tmp_path: Path, root_level: None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    services = FakeServices(Config())
    r = reloader(tmp_path, {"log_level": "error", "no_such_key": 1}, services)
    event = r.reload()
    assert not event.ok and "no_such_key" in event.error and str(tmp_path) in event.error
    assert services.applied == [] and logging.getLogger().level == logging.INFO
    services.refuse = "seccomp profile '/p' does not exist"
    (tmp_path / "peapod.yaml").write_text("log_level: error\n")
    event = r.reload()
    assert not event.ok and event.error == services.refuse
    assert logging.getLogger().level == logging.INFO
    assert [e.ok for e in r.history] == [False, False]


def test_history_keeps_the_last_reloads(tmp_path: Path, root_level: None) -> None:
    r = reloader(tmp_path, {}, FakeServices(Config()))
    for _ in range(HISTORY + 3):
        r.reload()
    assert len(r.history) == HISTORY


def test_peek_reads_what_the_files_say_even_when_they_do_not_load(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("root: /srv/peapod\nno_such_key: 1\nnetwork: {default_network: x}\n")
    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "10-broken.yaml").write_text("root: [unclosed\n")
    (drop / "20-later.yaml").write_text("listen: /run/p.sock\n")
    source = ConfigSource(main, drop, {"runroot": "/flag"})
    with pytest.raises(configmod.ConfigError):
        source.load()
    assert source.peek("root") == "/srv/peapod" and source.peek("listen") == "/run/p.sock"
    assert source.peek("network.default_network") == "x" and source.peek("runroot") == "/flag"
    assert source.peek("metrics.address") is None
