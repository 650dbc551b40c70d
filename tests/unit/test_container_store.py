"""Container records in the database and the cache; overlay mount options."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from base.db import Database
from base.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from oci.container.record import (
    COMPLETED,
    CREATED,
    CREATING,
    ERROR,
    EXITED,
    OOM_KILLED,
    RUNNING,
    ContainerRecord,
    exit_reason,
)
from oci.container.rootfs import MAX_OPTIONS, mount_rootfs, overlay_options
from oci.container.store import ContainerStore

POD = "f" * 64


def make(ctr_id: str, name: str, state: str = CREATED) -> ContainerRecord:
    return ContainerRecord(
        id=ctr_id, sandbox_id=POD, name=name, metadata_name=name, attempt=0, state=state,
        created_at=1, runtime_handler="runc", image="busybox", image_id="sha256:1",
        image_ref="sha256:1", bundle=f"/run/{ctr_id}", storage_dir=f"/var/{ctr_id}",
        log_path="/l", labels={"a": "b"},
    )  # fmt: skip


def test_a_record_serialises_as_asdict_would_and_reads_back_equal() -> None:
    rec = replace(
        make("c" * 64, "full"), mounts=[{"container_path": "/m", "image": {"image_id": "x"}}],
        resources={"cpu_shares": 2, "hugepage_limits": [{"page_size": "2MB", "limit": 1}]},
        user={"uid": 1, "gid": 2, "additional_gids": [3]}, monitor_env={"PATH": "/bin"},
        annotations={"k": "v"}, exit_code=3, reason=ERROR,
    )
    want = json.dumps({**asdict(rec), "format": 1}, sort_keys=True)
    assert rec.to_json() == want
    assert ContainerRecord.from_json(rec.to_json()) == rec


@pytest.fixture
def db(tmp_path: Path) -> Database:
    db = Database(tmp_path / "state.db")
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO sandboxes (id, name, state, created_at, record) VALUES (?, ?, ?, ?, ?)",
            (POD, "k8s_pod", "ready", 1, "{}"),
        )
    return db


def test_record_json_round_trip_and_paths() -> None:
    rec = make("a1", "one")
    back = ContainerRecord.from_json(rec.to_json())
    assert back == rec
    assert back.rootfs == "/run/a1/rootfs" and back.persist_dir == "/var/a1/userdata"
    assert not replace(rec, state=CREATING).visible
    with pytest.raises(DataLoss):
        ContainerRecord.from_json('{"format": 99}')
    with pytest.raises(DataLoss):
        ContainerRecord.from_json("not json")


def test_exit_reasons() -> None:
    assert exit_reason(0, False) == COMPLETED
    assert exit_reason(3, False) == ERROR
    assert exit_reason(137, True) == OOM_KILLED


def test_insert_find_update_delete_and_reload(db: Database) -> None:
    store = ContainerStore(db)
    store.insert(make("abc1", "one"))
    store.insert(make("abd2", "two", RUNNING))
    store.insert(make("zzz3", "three", CREATING))
    assert store.find("abc1").name == "one"
    assert store.find("abd").id == "abd2"
    with pytest.raises(InvalidArgument, match="matches 2"):
        store.find("ab")
    with pytest.raises(NotFound):
        store.find("zzz")  # half-built containers are invisible
    with pytest.raises(NotFound):
        store.find("nope")
    assert store.get("zzz3") is not None
    with pytest.raises(AlreadyExists, match="abc1"):
        store.insert(make("other", "one"))

    new = store.update("abc1", lambda r: replace(r, state=EXITED, exit_code=3))
    assert new is not None and new.exit_code == 3
    assert store.update("abc1", lambda r: None) == new
    assert store.update("gone", lambda r: r) is None

    again = ContainerStore(db)
    assert again.load() == []
    assert again.find("abc1") == new
    assert {r.id for r in again.visible()} == {"abc1", "abd2"}
    assert {r.id for r in again.in_pod(POD)} == {"abc1", "abd2", "zzz3"}

    again.delete("abc1")
    again.delete("abc1")
    again.insert(make("abc9", "one"))  # the name is free again
    fresh = ContainerStore(db)
    fresh.load()
    assert fresh.find("abc9").name == "one"


def test_unreadable_rows_are_reported(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO containers (id, sandbox_id, name, state, created_at, record) "
            "VALUES ('bad', ?, 'n', 'created', 1, '{}')",
            (POD,),
        )
    store = ContainerStore(db)
    broken = store.load()
    assert [b[0] for b in broken] == ["bad"]
    store.delete_row("bad")
    assert db.query("SELECT id FROM containers") == []


def test_overlay_options_fit_sixty_layers_and_refuse_too_many(tmp_path: Path) -> None:
    assert overlay_options(2) == "lowerdir=l/0:l/1,upperdir=upper,workdir=work"
    assert len(overlay_options(60)) < MAX_OPTIONS
    too_many = 1000
    assert len(overlay_options(too_many)) > MAX_OPTIONS
    with pytest.raises(InvalidArgument, match="1000 layers"):
        mount_rootfs([tmp_path] * too_many, tmp_path / "s", tmp_path / "m")
    assert not (tmp_path / "m").exists()
