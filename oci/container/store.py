"""Container records: rows of the ``containers`` table plus an in-memory cache.

Reads (lookups, listings, status) use the cache only and take no lock, so they
never wait on the database or on a slow operation. Writes go to the database
first, then replace the cached snapshot. Names are unique: a second container
with the same name is refused until the first is removed.

``on_change(old, new)`` (None for an insert's old or a delete's new) is called
after every write is committed and cached, with the write lock still held, so it
sees the changes one at a time in the order they were made. It must be quick and
must not write to the store (``oci.container.events`` publishes from it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from base.db import Database
from base.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from oci.container.record import ContainerRecord

log = logging.getLogger("peapod.containers")

ChangeHook = Callable[[ContainerRecord | None, ContainerRecord | None], None]


class ContainerStore:
    """Persisted container records and their index by id and by name."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()  # serialises writers; readers use the snapshot
        self._by_id: dict[str, ContainerRecord] = {}
        self._by_name: dict[str, str] = {}
        self._by_pod: dict[str, dict[str, ContainerRecord]] = {}  # pod id -> id -> record
        self.on_change: ChangeHook | None = None

    def load(self) -> list[tuple[str, str]]:
        """Fill the cache from the database; return (id, problem) for unreadable rows."""
        broken: list[tuple[str, str]] = []
        by_id: dict[str, ContainerRecord] = {}
        for row in self._db.query("SELECT id, record FROM containers ORDER BY created_at"):
            try:
                by_id[row["id"]] = ContainerRecord.from_json(row["record"])
            except DataLoss as exc:
                broken.append((row["id"], exc.message))
        with self._lock:
            self._by_id = by_id
            self._by_name = {r.name: r.id for r in by_id.values()}
            self._by_pod = {}
            for r in by_id.values():
                self._by_pod.setdefault(r.sandbox_id, {})[r.id] = r
        return broken

    # ---- writes -----------------------------------------------------------
    def insert(self, rec: ContainerRecord) -> None:
        """Store a new record; AlreadyExists if its name is taken."""
        with self._lock:
            holder = self._by_name.get(rec.name)
            if holder is not None:
                raise AlreadyExists(
                    f"container name {rec.name} is already in use by container {holder}; "
                    "remove that container first"
                )
            with self._db.transaction() as tx:
                tx.execute(
                    "INSERT INTO containers (id, sandbox_id, name, state, created_at, record) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (rec.id, rec.sandbox_id, rec.name, rec.state, rec.created_at, rec.to_json()),
                )
            self._by_id[rec.id] = rec
            self._by_name[rec.name] = rec.id
            self._by_pod.setdefault(rec.sandbox_id, {})[rec.id] = rec
            self._changed(None, rec)

    def update(
        self, ctr_id: str, change: Callable[[ContainerRecord], ContainerRecord | None]
    ) -> ContainerRecord | None:
        """Apply ``change`` to the current record atomically and store the result.

        ``change`` returns the new record, or None to leave it as it is. Returns the
        stored record (None if the container is gone).
        """
        with self._lock:
            current = self._by_id.get(ctr_id)
            if current is None:
                return None
            new = change(current)
            if new is None or new == current:
                return current
            with self._db.transaction() as tx:
                tx.execute(
                    "UPDATE containers SET state = ?, record = ? WHERE id = ?",
                    (new.state, new.to_json(), ctr_id),
                )
            self._by_id[ctr_id] = new
            self._by_pod.setdefault(new.sandbox_id, {})[ctr_id] = new
            self._changed(current, new)
            return new

    def delete(self, ctr_id: str) -> None:
        """Forget the container (row and cache); idempotent."""
        with self._lock:
            with self._db.transaction() as tx:
                tx.execute("DELETE FROM containers WHERE id = ?", (ctr_id,))
            rec = self._by_id.pop(ctr_id, None)
            if rec is not None and self._by_name.get(rec.name) == ctr_id:
                del self._by_name[rec.name]
            if rec is not None:
                in_pod = self._by_pod.get(rec.sandbox_id, {})
                in_pod.pop(ctr_id, None)
                if not in_pod:
                    self._by_pod.pop(rec.sandbox_id, None)
                self._changed(rec, None)

    def _changed(self, old: ContainerRecord | None, new: ContainerRecord | None) -> None:
        hook = self.on_change
        if hook is None:
            return
        try:
            hook(old, new)
        except Exception:  # the write is done; a failing observer must not undo or fail it
            rec = new or old
            log.exception("container change hook failed",
                          extra={"container": rec.id if rec else ""})

    def delete_row(self, ctr_id: str) -> None:
        """Drop an unreadable row that never made it into the cache."""
        with self._lock, self._db.transaction() as tx:
            tx.execute("DELETE FROM containers WHERE id = ?", (ctr_id,))

    # ---- reads --------------------------------------------------------------
    def get(self, ctr_id: str) -> ContainerRecord | None:
        """The record with exactly this id, if any (half-built ones included)."""
        return self._by_id.get(ctr_id)

    def find(self, id_or_prefix: str) -> ContainerRecord:
        """The visible container with this id or unique id prefix; NotFound otherwise."""
        if not id_or_prefix:
            raise InvalidArgument("container id is empty")
        rec = self._by_id.get(id_or_prefix)
        if rec is None:
            matches = [r for i, r in list(self._by_id.items()) if i.startswith(id_or_prefix)]
            matches = [r for r in matches if r.visible]
            if len(matches) > 1:
                raise InvalidArgument(
                    f"container id prefix {id_or_prefix!r} matches {len(matches)} containers; "
                    "give more characters"
                )
            rec = matches[0] if matches else None
        if rec is None or not rec.visible:
            raise NotFound(f"container {id_or_prefix} not found")
        return rec

    def all(self) -> list[ContainerRecord]:
        """Every record, half-built ones included."""
        return list(self._by_id.values())

    def visible(self) -> list[ContainerRecord]:
        return [r for r in list(self._by_id.values()) if r.visible]

    def in_pod(self, pod_id: str) -> list[ContainerRecord]:
        """The pod's containers, half-built ones included (oldest first)."""
        return list(self._by_pod.get(pod_id, {}).values())
