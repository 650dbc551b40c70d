"""Pod sandbox records: rows of the ``sandboxes`` table plus an in-memory index.

Reads (lookups, listings) use the in-memory index only, so they never wait
for the database or for slow work on some pod. Writes go to the database
first, then replace the cached snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from base.db import Database
from base.errors import DataLoss, InvalidArgument
from sandbox.record import SandboxRecord

log = logging.getLogger("peapod.sandbox")


@dataclass(frozen=True)
class SandboxFilter:
    """ListPodSandbox's filter: all given parts must match."""

    id: str = ""  # a full id or a unique prefix
    state: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


class SandboxStore:
    """The persisted records and their index by id and by name."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._by_id: dict[str, SandboxRecord] = {}
        self._by_name: dict[str, str] = {}

    # ---- database -------------------------------------------------------
    def load_all(self) -> tuple[list[SandboxRecord], list[tuple[str, str]]]:
        """Every stored record, and (id, problem) for rows that cannot be read."""
        records: list[SandboxRecord] = []
        broken: list[tuple[str, str]] = []
        for row in self._db.query("SELECT id, record FROM sandboxes ORDER BY created_at"):
            try:
                records.append(SandboxRecord.from_json(row["record"]))
            except DataLoss as exc:
                broken.append((row["id"], exc.message))
        return records, broken

    def save(self, rec: SandboxRecord) -> None:
        """Write the record's row (insert or update); the cache is not touched."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO sandboxes (id, name, state, created_at, record) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "name = excluded.name, state = excluded.state, record = excluded.record",
                (rec.id, rec.name, rec.state, rec.created_at, rec.to_json()),
            )

    def delete_row(self, pod_id: str) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM sandboxes WHERE id = ?", (pod_id,))

    # ---- cache ----------------------------------------------------------
    def publish(self, rec: SandboxRecord) -> None:
        """Make ``rec`` the snapshot readers see."""
        with self._lock:
            self._by_id[rec.id] = rec
            self._by_name[rec.name] = rec.id

    def put(self, rec: SandboxRecord) -> None:
        """Persist and publish."""
        self.save(rec)
        self.publish(rec)

    def delete(self, pod_id: str) -> None:
        """Delete the row, then forget the record."""
        self.delete_row(pod_id)
        with self._lock:
            rec = self._by_id.pop(pod_id, None)
            if rec is not None and self._by_name.get(rec.name) == pod_id:
                del self._by_name[rec.name]

    def get(self, pod_id: str) -> SandboxRecord | None:
        """The record with exactly this id."""
        return self._by_id.get(pod_id)

    def by_name(self, name: str) -> SandboxRecord | None:
        pod_id = self._by_name.get(name)
        return None if pod_id is None else self._by_id.get(pod_id)

    def resolve(self, id_or_prefix: str) -> SandboxRecord | None:
        """The record whose id is, or uniquely starts with, ``id_or_prefix``.

        None if nothing matches; InvalidArgument if the prefix is ambiguous.
        """
        if not id_or_prefix:
            return None
        exact = self._by_id.get(id_or_prefix)
        if exact is not None:
            return exact
        with self._lock:
            matches = [r for i, r in self._by_id.items() if i.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise InvalidArgument(
                f"pod sandbox id prefix {id_or_prefix!r} matches {len(matches)} pods; "
                "give more characters"
            )
        return matches[0] if matches else None

    def all(self) -> list[SandboxRecord]:
        with self._lock:
            return list(self._by_id.values())

    def list(self, flt: SandboxFilter | None = None) -> list[SandboxRecord]:
        """Records matching ``flt``, oldest first."""
        flt = flt or SandboxFilter()
        if flt.id:
            try:
                one = self.resolve(flt.id)
            except InvalidArgument:
                return []
            candidates = [] if one is None else [one]
        else:
            candidates = self.all()
        out = [
            r
            for r in candidates
            if (flt.state is None or r.state == flt.state)
            and all(r.labels.get(k) == v for k, v in flt.labels.items())
        ]
        out.sort(key=lambda r: r.created_at)
        return out
