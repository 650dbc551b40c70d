"""The state database turns SQLite's failures into clear domain errors, and rolls back.

The full-disk case is real: the database lives on a tiny tmpfs (root needed to
mount it) that is filled until a write fails.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from base.db import Database
from base.errors import Internal, ResourceExhausted
from cri.grpc_status import status_for

BLOB = b"x" * 16 * 1024


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("needs root (mounts a tmpfs)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "peapod-test", str(mnt)],
                   check=True, capture_output=True, timeout=10)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True, timeout=10)


def test_a_full_disk_is_resource_exhausted_naming_the_database_and_rolls_back(
    tiny_fs: Path,
) -> None:
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(b"\0" * 64 * 1024)
    db = Database(tiny_fs / "state.db")
    try:
        with db.transaction() as tx:
            tx.execute("INSERT INTO settings (key, value) VALUES ('keep', 'before')")
        written = 0
        with pytest.raises(ResourceExhausted) as info:
            for n in range(1000):
                with db.transaction() as tx:
                    tx.execute("UPDATE settings SET value = 'changed' WHERE key = 'keep'")
                    tx.execute("INSERT INTO settings (key, value) VALUES (?, ?)",
                               (f"filler-{n}", BLOB.decode()))
                written += 1
        err = info.value
        assert written > 0  # some writes fitted before the disk filled
        assert err.reason == "NO_SPACE"
        assert str(tiny_fs / "state.db") in err.message
        assert "database or disk is full" in err.message
        assert isinstance(err.__cause__, sqlite3.OperationalError)
        assert status_for(err)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The failed transaction left nothing: neither its update nor its insert.
        assert not db._conn.in_transaction
        rows = dict(db.query("SELECT key, value FROM settings ORDER BY key"))
        assert rows["keep"] == ("changed" if written else "before")
        assert len(rows) == written + 1
        assert f"filler-{written}" not in rows
        # The previous content survives reopening too.
        db.close()
        db = Database(tiny_fs / "state.db")
        assert len(db.query("SELECT key FROM settings")) == written + 1
        # Once space is freed, writes work again.
        ballast.unlink()
        with db.transaction() as tx:
            tx.execute("UPDATE settings SET value = 'after' WHERE key = 'keep'")
        assert db.query("SELECT value FROM settings WHERE key = 'keep'")[0][0] == "after"
    finally:
        db.close()


def test_a_full_disk_before_any_committed_change_keeps_the_old_value(tiny_fs: Path) -> None:
    db = Database(tiny_fs / "state.db")
    try:
        with db.transaction() as tx:
            tx.execute("INSERT INTO settings (key, value) VALUES ('keep', 'before')")
        with pytest.raises(ResourceExhausted), db.transaction() as tx:
            tx.execute("UPDATE settings SET value = 'changed' WHERE key = 'keep'")
            for n in range(1000):
                tx.execute("INSERT INTO settings (key, value) VALUES (?, ?)",
                           (f"filler-{n}", BLOB.decode()))
        assert dict(db.query("SELECT key, value FROM settings")) == {"keep": "before"}
    finally:
        db.close()


def test_other_sqlite_failures_are_internal_with_path_and_message(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.db")
    try:
        with pytest.raises(Internal) as info:
            db.query("SELECT * FROM no_such_table")
        assert str(tmp_path / "state.db") in info.value.message
        assert "no such table: no_such_table" in info.value.message
        with db.transaction() as tx:
            tx.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
        with pytest.raises(Internal) as info, db.transaction() as tx:
            tx.execute("UPDATE settings SET value = '2' WHERE key = 'a'")
            tx.execute("INSERT INTO settings (key, value) VALUES ('a', '3')")
        assert "UNIQUE constraint failed: settings.key" in info.value.message
        assert status_for(info.value)[0] == grpc.StatusCode.INTERNAL
        assert db.query("SELECT value FROM settings WHERE key = 'a'")[0][0] == "1"
        # Errors that are not SQLite's still propagate unchanged (and roll back).
        with pytest.raises(KeyError), db.transaction() as tx:
            tx.execute("UPDATE settings SET value = '4' WHERE key = 'a'")
            raise KeyError("boom")
        assert db.query("SELECT value FROM settings WHERE key = 'a'")[0][0] == "1"
    finally:
        db.close()
