"""Work that outlives its caller, and its result kept for the caller's retry.

The kubelet gives RunPodSandbox and CreateContainer a deadline and, when it passes,
retries with the same name (the name includes the attempt). ``PendingResults.run``
runs the work on a thread of its own, under its own deadline, and waits for it
within the caller's:

- a caller still waiting when the work succeeds receives the result;
- a caller whose deadline passes first gets DeadlineExceeded; the work goes on;
- a result nobody was waiting for is kept (``holds`` says so, so listings can hide
  it) for ``keep_for`` seconds, at most ``max_kept`` of them: the next call with
  the same key receives it at once. A call while the work still runs waits for it;
- a result is handed over once, then forgotten: the key is the owner's business
  again (``admit`` refuses a second build, e.g. with AlreadyExists);
- failed work must have rolled itself back; nothing is kept. Its waiting starter
  gets the error, any other waiter starts a fresh attempt;
- a kept result nobody claims in time (or the oldest beyond ``max_kept``) goes to
  ``discard``, which removes what the work made; a call for the key meanwhile
  waits for that, then starts afresh.

``close`` cancels running work (it rolls back) and waits for it a bounded time;
kept results are left as they are. ``cancel_group`` cancels the running work of one
``group`` (e.g. the containers being created in a pod that is being stopped): it rolls
back, its waiting starter gets the error, and nothing is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast

from base.cancel import CallContext
from base.errors import Cancelled, DeadlineExceeded, Unavailable

log = logging.getLogger("peapod.pending")

T = TypeVar("T")

RUNNING, KEPT, DISCARDING = "running", "kept", "discarding"
_FAILED, _GONE = "failed", "gone"  # no longer in the table
REAP_POLL = 1.0  # the reaper looks at the clock at least this often
# What LateObserver.late_work reports.
OUTLIVED, HANDED, DISCARDED = "outlived", "handed", "discarded"


class LateObserver(Protocol):
    """Told when work outlives its caller, is handed to a retry, or is discarded unclaimed."""

    def late_work(self, name: str, event: str) -> None: ...


class _NoLateObserver:
    def late_work(self, name: str, event: str) -> None:
        pass


class _Entry(Generic[T]):
    """One key's work: its context, thread, state and outcome."""

    def __init__(self, key: str, ctx: CallContext, group: str) -> None:
        self.key = key
        self.ctx = ctx
        self.group = group
        self.cancelled_why = ""  # set by cancel_group
        self.state = RUNNING
        self.result: T | None = None
        self.error: BaseException | None = None
        self.expires = 0.0
        self.waiters = 0
        self.thread: threading.Thread | None = None


class PendingResults(Generic[T]):
    """Keyed work with a bounded store of results finished after their caller left."""

    def __init__(
        self,
        name: str,
        keep_for: float,
        max_kept: int,
        discard: Callable[[str, T], None],
        clock: Callable[[], float] = time.monotonic,
        observer: LateObserver | None = None,
    ) -> None:
        self._name = name
        self._observer: LateObserver = observer or _NoLateObserver()
        self._keep_for = keep_for
        self._max_kept = max_kept
        self._discard = discard
        self._clock = clock
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry[T]] = {}
        self._reaper: threading.Thread | None = None
        self._closed = False

    # ---- callers ----------------------------------------------------------
    def run(
        self,
        key: str,
        work: Callable[[CallContext], T],
        timeout: float,
        ctx: CallContext,
        admit: Callable[[], None] | None = None,
        what: str = "",
        group: str = "",
    ) -> T:
        """The result for ``key``: kept, awaited, or from ``work`` started now.

        ``work`` runs under a context of its own that expires after ``timeout``
        seconds (``what`` describes it in its errors); ``admit``, called before
        starting fresh work, may refuse by raising. Work started now belongs to
        ``group`` (see ``cancel_group``).
        """
        mine: _Entry[T] | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise Unavailable(f"{ctx.what}: peapod is shutting down")
                entry = self._entries.get(key)
                if entry is None:
                    if admit is not None:
                        admit()
                    entry = mine = self._start(key, work, timeout, what or ctx.what, group)
                if entry.state == KEPT:
                    return self._claim(entry, ctx, handed=entry is not mine)
                entry.waiters += 1
                try:
                    self._cond.wait(self._wait_time(ctx, entry is mine, timeout))
                finally:
                    entry.waiters -= 1
                if entry.state == _FAILED and entry is mine:
                    assert entry.error is not None
                    raise entry.error

    def holds(self, key: str) -> bool:
        """Whether ``key``'s work runs or waits to be claimed or is being discarded."""
        return key in self._entries

    def state(self, key: str) -> str | None:
        """RUNNING, KEPT, DISCARDING, or None when nothing is pending for ``key``."""
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def _claim(self, entry: _Entry[T], ctx: CallContext, handed: bool) -> T:
        try:
            ctx.check()  # a caller already gone would lose it: leave it kept
        except (DeadlineExceeded, Cancelled) as exc:
            raise type(exc)(
                f"{ctx.what} finished after the caller's deadline; a retry with the same "
                "name and attempt receives it"
            ) from None
        del self._entries[entry.key]
        entry.state = _GONE
        if handed:
            self._observer.late_work(self._name, HANDED)
            log.info("handing a result finished after its caller's deadline to the retry",
                     extra={"pending": self._name, "key": entry.key})
        return cast(T, entry.result)

    def _wait_time(self, ctx: CallContext, mine: bool, timeout: float) -> float:
        """How long to wait for a change; raises once the caller's time is up."""
        try:
            return ctx.timeout(REAP_POLL) or REAP_POLL
        except (DeadlineExceeded, Cancelled) as exc:
            if mine:
                self._observer.late_work(self._name, OUTLIVED)
                why = (f"did not finish before the caller's deadline; it goes on (for up to "
                       f"{timeout:g}s) and a retry with the same name and attempt receives it")
            else:
                why = ("is still in progress from an earlier call; retry with the same name "
                       "and attempt to receive it")
            raise type(exc)(f"{ctx.what} {why}") from None

    # ---- the work -----------------------------------------------------------
    def _start(
        self, key: str, work: Callable[[CallContext], T], timeout: float, what: str, group: str
    ) -> _Entry[T]:
        entry: _Entry[T] = _Entry(key, CallContext.with_timeout(timeout, what), group)
        entry.thread = threading.Thread(
            target=self._work, args=(entry, work), name=f"{self._name}-work", daemon=True
        )
        self._entries[key] = entry
        entry.thread.start()
        return entry

    def _work(self, entry: _Entry[T], work: Callable[[CallContext], T]) -> None:
        try:
            result = work(entry.ctx)
        except BaseException as exc:
            if isinstance(exc, Cancelled) and entry.cancelled_why:
                exc = Cancelled(f"{entry.ctx.what} was cancelled: {entry.cancelled_why}")
            with self._cond:
                entry.state, entry.error = _FAILED, exc
                self._forget(entry)
                unseen = entry.waiters == 0
            if unseen:
                log.warning("work failed after its caller had gone; nothing is kept",
                            extra={"pending": self._name, "key": entry.key, "error": str(exc)})
            return
        with self._cond:
            entry.state, entry.result = KEPT, result
            entry.expires = self._clock() + self._keep_for
            unseen = entry.waiters == 0
            self._cond.notify_all()
            if self._reaper is None and not self._closed:
                self._reaper = threading.Thread(
                    target=self._reap, name=f"{self._name}-reaper", daemon=True
                )
                self._reaper.start()
        if unseen:
            log.info("finished after its caller's deadline; kept for the retry",
                     extra={"pending": self._name, "key": entry.key,
                            "keep_for": self._keep_for})

    def _forget(self, entry: _Entry[T]) -> None:
        """Drop ``entry`` from the table (lock held) and wake its waiters."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        self._cond.notify_all()

    # ---- unclaimed results ----------------------------------------------------
    def sweep(self) -> list[str]:
        """Discard the kept results that are due now; returns their keys."""
        with self._cond:
            due = self._due()
        for entry in due:
            self._discard_one(entry)
        return [e.key for e in due]

    def _due(self) -> list[_Entry[T]]:
        """Kept entries past their time or beyond the count, marked DISCARDING (lock held)."""
        now = self._clock()
        kept = sorted((e for e in self._entries.values() if e.state == KEPT),
                      key=lambda e: e.expires)
        over = len(kept) - self._max_kept
        due = [e for i, e in enumerate(kept) if i < over or e.expires <= now]
        for entry in due:
            entry.state = DISCARDING
        return due

    def _discard_one(self, entry: _Entry[T]) -> None:
        log.info("removing a result nobody came back for",
                 extra={"pending": self._name, "key": entry.key})
        self._observer.late_work(self._name, DISCARDED)
        try:
            self._discard(entry.key, cast(T, entry.result))
        except Exception:
            log.exception("removing an unclaimed result failed",
                          extra={"pending": self._name, "key": entry.key})
        finally:
            with self._cond:
                entry.state = _GONE
                self._forget(entry)

    def _reap(self) -> None:
        """Discard kept results when due; ends when none is kept or on close."""
        while True:
            with self._cond:
                if self._closed:
                    self._reaper = None
                    return
                due = self._due()
                if not due:
                    kept = [e.expires for e in self._entries.values() if e.state == KEPT]
                    if not kept:
                        self._reaper = None
                        return
                    wait = min(kept) - self._clock()
                    self._cond.wait(min(max(wait, 0.01), REAP_POLL))
                    continue
            for entry in due:
                self._discard_one(entry)

    # ---- cancellation ------------------------------------------------------------
    def cancel_group(self, group: str, why: str) -> list[str]:
        """Cancel the running work of ``group`` because ``why``; returns its keys.

        Work that heeds its context rolls back and fails with Cancelled, which
        its waiting starter receives, saying ``why``; nothing is kept for a
        retry. Kept results of the group are left as they are.
        """
        with self._cond:
            running = [e for e in self._entries.values()
                       if e.state == RUNNING and e.group == group]
            for entry in running:
                entry.cancelled_why = why
        for entry in running:
            entry.ctx.cancel()
        return [e.key for e in running]

    # ---- shut-down ---------------------------------------------------------------
    def close(self, wait: float) -> None:
        """Cancel running work and wait up to ``wait`` seconds for it; refuse new calls."""
        with self._cond:
            self._closed = True
            running = [e for e in self._entries.values() if e.state == RUNNING]
            threads = [e.thread for e in running if e.thread is not None]
            if self._reaper is not None:
                threads.append(self._reaper)
            self._cond.notify_all()
        for entry in running:
            entry.ctx.cancel()
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        left = [e.key for e in running if e.thread is not None and e.thread.is_alive()]
        if left:
            log.warning("work still running at shut-down; start-up recovery takes it apart",
                        extra={"pending": self._name, "keys": ", ".join(left)})
