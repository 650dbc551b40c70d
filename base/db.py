"""The state database: one SQLite file (WAL) holding all of peapod's state.

Schema changes are an ordered list of migrations; ``PRAGMA user_version`` is
the schema version. A database newer than this build refuses to open.

A failure of SQLite itself inside ``Database.transaction`` or ``Database.query``
becomes a domain error naming the database file (``database_error``): a full
disk is ResourceExhausted (reason NO_SPACE), anything else Internal with
SQLite's message. The transaction is rolled back first.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from base.errors import FailedPrecondition, Internal, PeapodError, ResourceExhausted

log = logging.getLogger("peapod.db")

NO_SPACE = "NO_SPACE"

# Each entry moves the schema from version i to i+1. Never edit an entry that
# has shipped; append a new one.
MIGRATIONS: list[str] = [
    # 1: images
    """
    CREATE TABLE images (
        id            TEXT PRIMARY KEY,          -- sha256:<hex> of the config blob
        manifest_digest TEXT NOT NULL,           -- digest of the platform manifest
        manifest_media_type TEXT NOT NULL,
        config_json   TEXT NOT NULL,
        size          INTEGER NOT NULL,          -- bytes: config + compressed layers
        created_at    INTEGER NOT NULL,          -- unix nanoseconds, when pulled
        pinned        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE image_names (
        name      TEXT PRIMARY KEY,              -- repo:tag or repo@digest
        image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind      TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);
    CREATE TABLE layers (
        diff_id   TEXT PRIMARY KEY,              -- sha256 of the uncompressed tar
        size      INTEGER NOT NULL,              -- bytes on disk once unpacked
        inodes    INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position  INTEGER NOT NULL,              -- 0 = bottom layer
        diff_id   TEXT NOT NULL REFERENCES layers(diff_id),
        blob_digest TEXT NOT NULL,               -- digest of the layer as pulled
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_by_diff ON image_layers(diff_id);
    CREATE TABLE layer_holds (
        holder    TEXT NOT NULL,                 -- e.g. the ID of a container using them
        diff_id   TEXT NOT NULL REFERENCES layers(diff_id),
        PRIMARY KEY (holder, diff_id)
    );
    CREATE INDEX layer_holds_by_diff ON layer_holds(diff_id);
    """,
    # 2: pod sandboxes, containers, daemon settings. Each row keeps its indexed
    # identity in columns and the rest of the domain record as JSON.
    """
    CREATE TABLE sandboxes (
        id          TEXT PRIMARY KEY,            -- 64 hex
        name        TEXT NOT NULL UNIQUE,        -- k8s_<pod>_<namespace>_<uid>_<attempt>
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,            -- unix nanoseconds
        record      TEXT NOT NULL                -- JSON of the domain record
    );
    CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id),
        name        TEXT NOT NULL UNIQUE,        -- k8s_<ctr>_<pod>_<namespace>_<uid>_<attempt>
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        record      TEXT NOT NULL
    );
    CREATE INDEX containers_by_sandbox ON containers(sandbox_id);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]


class Database:
    """A thread-safe handle on the state database.

    One connection, serialised by a lock: every statement is short, and the
    in-memory caches of the domain stores keep reads off this path.
    """

    def __init__(self, path: Path, migrations: Sequence[str] = MIGRATIONS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate(migrations)

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: Sequence[str]) -> None:
        current = self.schema_version
        if current > len(migrations):
            raise FailedPrecondition(
                f"state database {self.path} has schema version {current}, newer than "
                f"this peapod understands ({len(migrations)}); run a newer peapod"
            )
        for version in range(current, len(migrations)):
            with self.transaction() as conn:
                conn.executescript_in_tx(migrations[version], version + 1)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """Run statements atomically; roll back if the block raises.

        SQLite's own errors (in the block, at BEGIN or at COMMIT) are raised as
        ``database_error``; others propagate unchanged.
        """
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._rollback()
                raise database_error(self.path, exc, "starting a transaction") from exc
            try:
                yield _Tx(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise database_error(self.path, exc, "a transaction") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Roll back the open transaction, if any (SQLite may have done so itself)."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the first error is the one to report
            log.error("rolling back a transaction failed",
                      extra={"database": str(self.path), "error": str(exc)})

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Run a read-only statement and return every row."""
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise database_error(self.path, exc, "a query") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def database_error(path: Path, exc: sqlite3.Error, doing: str) -> PeapodError:
    """The domain error for SQLite's ``exc``: ResourceExhausted on a full disk, else Internal."""
    code = getattr(exc, "sqlite_errorcode", None)
    message = str(exc) or type(exc).__name__
    if code == sqlite3.SQLITE_FULL or (code is None and "database or disk is full" in message):
        return ResourceExhausted(
            f"state database {path} is out of space ({message}); free space on its "
            "filesystem and retry", reason=NO_SPACE,
        )
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    return Internal(f"state database {path}: {doing} failed: {message} ({name})",
                    reason="DATABASE")


class _Tx:
    """The statements available inside ``Database.transaction``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def executescript_in_tx(self, script: str, new_version: int) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for statement in _split_sql(script):
            self._conn.execute(statement)
        self._conn.execute(f"PRAGMA user_version={int(new_version)}")


def _split_sql(script: str) -> list[str]:
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        stripped = line.split("--", 1)[0]
        buf += stripped
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
