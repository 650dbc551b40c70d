"""StreamPodSandboxes, StreamContainers, StreamImages: the unary list, in batches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from api import api_pb2 as pb
from base.db import Database
from cri.convert import batches as batches_module
from cri.convert.batches import batches
from cri.handlers import container_status, image_status, sandbox_status
from oci.container.record import CREATED, EXITED, RUNNING, ContainerRecord
from oci.container.store import ContainerStore
from oci.image.index import ImageRecord
from sandbox.pod_config import PodMetadata
from sandbox.record import NOTREADY, READY, SandboxRecord
from sandbox.store import SandboxStore

SMALL = 3


def test_batches_cover_every_item_once_in_order() -> None:
    items = list(range(10))
    got = list(batches(items, 3))
    assert [len(b) for b in got] == [3, 3, 3, 1]
    assert [x for b in got for x in b] == items
    assert list(batches([], 3)) == []
    assert [list(b) for b in batches([1, 2], 0)] == [[1, 2]]  # 0: the default size


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches_module, "BATCH", SMALL)


@pytest.fixture
def services(tmp_path: Path) -> Any:
    db = Database(tmp_path / "state.db")
    pods, ctrs = SandboxStore(db), ContainerStore(db)
    for n in range(8):
        pod = SandboxRecord(id=f"{n:02d}" + "a" * 62, name=f"k8s_p{n}",
                            metadata=PodMetadata(f"p{n}", f"u{n}", "ns"),
                            state=READY if n % 2 else NOTREADY, created_at=n + 1,
                            labels={"app": "web" if n < 5 else "db"})  # fmt: skip
        pods.put(pod)
        for m in range(2):
            ctrs.insert(ContainerRecord(
                id=f"{n:02d}{m}" + "c" * 61, sandbox_id=pod.id, name=f"k8s_c{m}_p{n}",
                metadata_name=f"c{m}", attempt=0, state=(CREATED, RUNNING, EXITED)[(n + m) % 3],
                created_at=n * 10 + m, runtime_handler="runc", image="busybox",
                image_id="sha256:1", image_ref="sha256:1", bundle="/b", storage_dir="/s",
                log_path="/l", labels={"tier": str(m)},
            ))  # fmt: skip
    images = [ImageRecord(id=f"sha256:{n:064x}", manifest_digest="", manifest_media_type="",
                          config={}, size=n, created_at=n, repo_tags=(f"r/i{n}:1",),
                          repo_digests=(), layers=(), pinned=False)
              for n in range(7)]  # fmt: skip
    by_ref = {r.repo_tags[0]: r for r in images}
    return SimpleNamespace(
        pods=SimpleNamespace(store=pods, list=pods.list),
        containers=SimpleNamespace(
            store=ctrs,
            list=lambda flt: [r for r in ctrs.visible() if flt is None or flt.matches(r)],
        ),
        images=SimpleNamespace(list=lambda: images, status=by_ref.get),
    )


def _flat(replies: list[Any], field: str) -> list[Any]:
    assert all(len(getattr(r, field)) >= 1 for r in replies)  # no empty message
    assert all(len(getattr(r, field)) <= SMALL for r in replies)
    return [item for r in replies for item in getattr(r, field)]


POD_FILTERS = [None, pb.PodSandboxFilter(id="03"), pb.PodSandboxFilter(id="zz"),
               pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY)),
               pb.PodSandboxFilter(label_selector={"app": "web"}),
               pb.PodSandboxFilter(label_selector={"app": "none"})]  # fmt: skip


@pytest.mark.parametrize("flt", POD_FILTERS)
def test_stream_pod_sandboxes_equals_list(services: Any, small_batches: None,
                                          flt: pb.PodSandboxFilter | None) -> None:  # fmt: skip
    unary = sandbox_status.list_pod_sandbox(
        services, pb.ListPodSandboxRequest(filter=flt), None).decode().items  # type: ignore[arg-type]
    replies = list(sandbox_status.stream_pod_sandboxes(
        services, pb.StreamPodSandboxesRequest(filter=flt), None))  # type: ignore[arg-type]
    assert _flat(replies, "pod_sandboxes") == list(unary)
    if flt is None:
        assert len(unary) == 8 and len(replies) == 3  # more than one batch


CONTAINER_FILTERS = [None, pb.ContainerFilter(id="031"), pb.ContainerFilter(pod_sandbox_id="05"),
                     pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)),
                     pb.ContainerFilter(label_selector={"tier": "1"}),
                     pb.ContainerFilter(id="nothing")]  # fmt: skip


@pytest.mark.parametrize("flt", CONTAINER_FILTERS)
def test_stream_containers_equals_list(services: Any, small_batches: None,
                                       flt: pb.ContainerFilter | None) -> None:  # fmt: skip
    unary = container_status.list_containers(
        services, pb.ListContainersRequest(filter=flt), None).decode().containers  # type: ignore[arg-type]
    replies = list(container_status.stream_containers(
        services, pb.StreamContainersRequest(filter=flt), None))  # type: ignore[arg-type]
    assert _flat(replies, "containers") == list(unary)
    if flt is None:
        assert len(unary) == 16 and len(replies) == 6


@pytest.mark.parametrize("ref", ["", "r/i4:1", "r/missing:1"])
def test_stream_images_equals_list(services: Any, small_batches: None, ref: str) -> None:
    flt = pb.ImageFilter(image=pb.ImageSpec(image=ref)) if ref else None
    unary = image_status.list_images(
        services, pb.ListImagesRequest(filter=flt), None).images  # type: ignore[arg-type]
    replies = list(image_status.stream_images(
        services, pb.StreamImagesRequest(filter=flt), None))  # type: ignore[arg-type]
    assert _flat(replies, "images") == list(unary)
    assert len(unary) == {"": 7, "r/i4:1": 1, "r/missing:1": 0}[ref]


def test_a_list_changing_between_calls_is_streamed_from_one_snapshot(
    services: Any, small_batches: None
) -> None:
    replies = container_status.stream_containers(
        services, pb.StreamContainersRequest(), None)  # type: ignore[arg-type]
    first = next(replies)
    for rec in services.containers.store.all():  # everything changes after the first batch
        services.containers.store.update(rec.id, lambda c: replace(c, state=EXITED))
    rest = list(replies)
    ids = [c.id for c in first.containers] + [c.id for r in rest for c in r.containers]
    assert len(ids) == len(set(ids)) == 16  # each item once
