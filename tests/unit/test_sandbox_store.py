"""Unit tests for the sandbox store (persistence, prefix lookup, filters), the undo stack,
name reservations and the background retrier."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from base.db import Database
from base.errors import AlreadyExists, InvalidArgument
from sandbox.pod_config import PodMetadata
from sandbox.record import NOTREADY, READY, SandboxRecord
from sandbox.reservations import NameReservations
from sandbox.retry import BackgroundRetrier
from sandbox.store import SandboxFilter, SandboxStore
from sandbox.undo import StopRollback, UndoStack


def rec(pod_id: str, name: str, state: str = READY, created: int = 1,
        labels: dict[str, str] | None = None) -> SandboxRecord:
    return SandboxRecord(id=pod_id, name=name, metadata=PodMetadata(name, "u", "ns"),
                         state=state, created_at=created, labels=labels or {})


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "state.db")
    yield database  # type: ignore[misc]
    database.close()


def test_put_persists_and_reloads(db: Database) -> None:
    store = SandboxStore(db)
    a = rec("aa11", "pod-a", created=2)
    store.put(a)
    store.put(rec("aa11", "pod-a", state=NOTREADY, created=2))  # an update, not a second row
    assert store.get("aa11") is not None and store.get("aa11").state == NOTREADY  # type: ignore[union-attr]
    assert len(db.query("SELECT * FROM sandboxes")) == 1
    loaded, broken = SandboxStore(db).load_all()
    assert [r.state for r in loaded] == [NOTREADY] and broken == []
    store.delete("aa11")
    assert store.get("aa11") is None and store.by_name("pod-a") is None
    assert db.query("SELECT * FROM sandboxes") == []


def test_save_is_not_visible_until_published(db: Database) -> None:
    store = SandboxStore(db)
    store.save(rec("bb", "pod-b"))
    assert store.get("bb") is None and store.list() == []
    store.publish(rec("bb", "pod-b"))
    assert store.by_name("pod-b") is not None


def test_unreadable_rows_are_reported(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO sandboxes VALUES ('zz', 'n', 'ready', 1, '{broken')")
    loaded, broken = SandboxStore(db).load_all()
    assert loaded == [] and broken[0][0] == "zz" and "not valid JSON" in broken[0][1]


def test_prefix_lookup(db: Database) -> None:
    store = SandboxStore(db)
    for pod_id, name in (("abc123", "one"), ("abd456", "two"), ("ffff00", "three")):
        store.publish(rec(pod_id, name))
    assert store.resolve("abc123").name == "one"  # type: ignore[union-attr]
    assert store.resolve("abd").name == "two"  # type: ignore[union-attr]
    assert store.resolve("f").name == "three"  # type: ignore[union-attr]
    assert store.resolve("0") is None and store.resolve("") is None
    with pytest.raises(InvalidArgument, match="matches 2 pods"):
        store.resolve("ab")


def test_filters(db: Database) -> None:
    store = SandboxStore(db)
    store.publish(rec("a1", "one", READY, 3, {"app": "web", "tier": "fe"}))
    store.publish(rec("a2", "two", NOTREADY, 1, {"app": "web"}))
    store.publish(rec("b3", "three", READY, 2, {"app": "db"}))
    ids = lambda flt: [r.id for r in store.list(flt)]  # noqa: E731
    assert ids(None) == ["a2", "b3", "a1"]  # oldest first
    assert ids(SandboxFilter(state=READY)) == ["b3", "a1"]
    assert ids(SandboxFilter(labels={"app": "web"})) == ["a2", "a1"]
    assert ids(SandboxFilter(labels={"app": "web", "tier": "fe"})) == ["a1"]
    assert ids(SandboxFilter(id="b")) == ["b3"]
    assert ids(SandboxFilter(id="a")) == []  # ambiguous prefix: nothing
    assert ids(SandboxFilter(id="a2", state=READY)) == []
    assert ids(SandboxFilter(id="a2", labels={"app": "web"})) == ["a2"]


def test_undo_runs_newest_first_and_collects_errors() -> None:
    done: list[str] = []
    undo = UndoStack()
    undo.push("one", lambda: done.append("one"))
    undo.push("two", lambda: (_ for _ in ()).throw(InvalidArgument("two broke")))
    undo.push("three", lambda: done.append("three"))
    problems = undo.rollback()
    assert done == ["three", "one"]
    assert problems == ["two: two broke"]
    assert not undo.stopped and len(undo) == 0
    assert undo.rollback() == []


def test_undo_stop_keeps_older_steps() -> None:
    done: list[str] = []
    undo = UndoStack()
    undo.push("old", lambda: done.append("old"))

    def refuse() -> None:
        raise StopRollback("DEL failed")

    undo.push("network", refuse)
    undo.push("new", lambda: done.append("new"))
    assert undo.rollback() == ["network: DEL failed"]
    assert done == ["new"] and undo.stopped


def test_undo_discard() -> None:
    done: list[str] = []
    undo = UndoStack()
    undo.push("x", lambda: done.append("x"))
    undo.discard()
    assert undo.rollback() == [] and done == []


def test_reservations_conflict_and_release() -> None:
    names = NameReservations()
    names.acquire("pod", "id1")
    with pytest.raises(AlreadyExists, match="already reserved for pod id1"):
        names.acquire("pod", "id2")
    with pytest.raises(AlreadyExists, match="already reserved for pod id1"):
        names.check("pod")
    names.release("pod", "other")  # not its holder: no effect
    assert names.reserved("pod") == "id1"
    names.release("pod", "id1")
    names.check("pod")
    names.acquire("pod", "id2")
    assert names.reserved("pod") == "id2"


def test_restored_names_are_reserved() -> None:
    names = NameReservations()
    names.restore("pod", "old")
    with pytest.raises(AlreadyExists, match="old"):
        names.acquire("pod", "new")


def test_background_retrier_backs_off_until_done() -> None:
    calls: list[float] = []
    finished = threading.Event()

    def attempt(key: str) -> bool:
        calls.append(time.monotonic())
        if len(calls) >= 4:
            finished.set()
            return True
        return False

    retrier = BackgroundRetrier(attempt, base=0.05, cap=0.2)
    try:
        retrier.schedule("pod", delay=0)
        assert finished.wait(5)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.18  # 0.05, 0.1, 0.2
        time.sleep(0.3)
        assert len(calls) == 4 and retrier.pending() == []
    finally:
        retrier.close()


def test_background_retrier_forget_and_close() -> None:
    calls: list[str] = []
    retrier = BackgroundRetrier(lambda k: calls.append(k) or False, base=0.05)
    retrier.schedule("a", delay=0.2)
    retrier.forget("a")
    time.sleep(0.3)
    assert calls == []
    retrier.close()
    retrier.schedule("b", delay=0)  # ignored once closed
    time.sleep(0.1)
    assert calls == []
