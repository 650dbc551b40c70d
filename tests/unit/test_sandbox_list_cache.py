"""ListPodSandbox's per-record item cache under concurrent calls."""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Iterator

import pytest

from cri.convert import sandbox as sandbox_convert
from cri.convert.item_cache import ItemCache
from sandbox.pod_config import PodMetadata
from sandbox.record import READY, SandboxRecord


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    yield
    sys.setswitchinterval(before)


def record() -> SandboxRecord:
    pod_id = secrets.token_hex(32)
    return SandboxRecord(id=pod_id, name=f"k8s_{pod_id}", metadata=PodMetadata("p", "u", "n"),
                         state=READY, created_at=1)


def test_concurrent_lists_while_pods_come_and_go_never_fail(busy_switching: None) -> None:
    cache = ItemCache(sandbox_convert.to_pb_sandbox)
    errors: list[BaseException] = []

    def lister() -> None:
        try:
            for _ in range(150):
                live = [record() for _ in range(20)]  # pods created and removed meanwhile
                items = cache.items(live, len(live))
                assert [i.id for i in items] == [r.id for r in live]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=lister) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
