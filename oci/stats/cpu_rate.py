"""``usage_nano_cores``: CPU cores in use, from cumulative CPU time sampled over time.

Every read of a container's or pod's CPU counter is a sample (``observe``); the
background collector adds one per ``collection_period`` too, so the first stats call
on a container that has lived one period already gets a rate. A rate is computed
against the newest earlier sample at least ``MIN_WINDOW_NS`` older, so two callers
polling in turn (the kubelet, a metrics scraper) each get a rate over a window of at
least a second rather than over the few milliseconds between them. Only when no
sample is that old is the oldest one used, if it is at least ``MIN_FALLBACK_NS`` old.
Samples older than the reference are dropped (no later call can prefer them), so each
id keeps one sample from over a second ago plus those of the last second, at most
``MAX_SAMPLES``. A counter that went backwards (the cgroup was made anew) starts the
history again, with no rate.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

MIN_WINDOW_NS = 1_000_000_000
MIN_FALLBACK_NS = 100_000_000
MAX_SAMPLES = 16


class CpuRates:
    """Per-id CPU samples and the rates between them; safe to use from many threads."""

    def __init__(self, min_window_ns: int = MIN_WINDOW_NS, max_samples: int = MAX_SAMPLES) -> None:
        self._min_window = min_window_ns
        self._max = max(2, max_samples)
        self._lock = threading.Lock()
        self._samples: dict[Hashable, list[tuple[int, int]]] = {}

    def observe(self, key: Hashable, timestamp_ns: int, usage_ns: int) -> int | None:
        """Record ``usage_ns`` at ``timestamp_ns`` for ``key``; return the rate in
        nano-cores (ns of CPU per s) since the chosen earlier sample, or None without one."""
        with self._lock:
            samples = self._samples.setdefault(key, [])
            if samples and usage_ns < samples[-1][1]:
                samples.clear()  # counter reset: a new cgroup under the same id
            ref_index = self._reference(samples, timestamp_ns)
            rate = None
            if ref_index is not None:
                t0, u0 = samples[ref_index]
                rate = (usage_ns - u0) * 1_000_000_000 // (timestamp_ns - t0)
                del samples[:ref_index]
            if not samples or timestamp_ns > samples[-1][0]:
                samples.append((timestamp_ns, usage_ns))
            if len(samples) > self._max:
                del samples[1]  # keep the reference, thin the recent ones
            return rate

    def _reference(self, samples: list[tuple[int, int]], now: int) -> int | None:
        """Index of the newest sample at least the minimum window before ``now``, else
        of the oldest one if that is ``MIN_FALLBACK_NS`` old; None if there is none."""
        for i in range(len(samples) - 1, -1, -1):
            if now - samples[i][0] >= self._min_window:
                return i
        if samples and now - samples[0][0] >= min(MIN_FALLBACK_NS, self._min_window):
            return 0
        return None

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget every id not in ``keys`` (removed containers and pods)."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._samples if k not in keep]:
                del self._samples[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)
