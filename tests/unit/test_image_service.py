"""ImageService lookups and removal when registries.conf breaks while peapod runs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.db import Database
from base.errors import FailedPrecondition
from oci.image.service import ImageService, PullSettings
from oci.image.store import ImageStore


class _Observer:
    def bytes_downloaded(self, count: int) -> None: ...
    def layer_reused(self) -> None: ...
    def layer_downloaded(self, size: int) -> None: ...
    def pull_finished(self, result: str) -> None: ...
    def pull_succeeded(self, seconds: float, image_size: int) -> None: ...


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def service(tmp_path: Path) -> Any:
    conf = tmp_path / "registries.conf"
    conf.write_text('unqualified-search-registries = ["docker.io"]\n')
    db = Database(tmp_path / "state.db")
    store = ImageStore(tmp_path / "images", db, sync=False)
    settings = PullSettings(conf, tmp_path / "conf.d", ("docker.io",), None, 1, 5.0)
    svc = ImageService(store, settings, _Observer())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("f")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    blob = tmp_path / "layer.tar"
    blob.write_bytes(buf.getvalue())
    diff_id = _sha(buf.getvalue())
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    with store.lease() as lease:
        store.ensure_layer(diff_id, blob, "none", lease, CallContext())
        record = store.add_image(
            _sha(config), _sha(b"m"), "application/vnd.oci.image.manifest.v1+json", config,
            10, [(diff_id, _sha(b"l"))], ["docker.io/library/busybox:latest"], lease,
        )
    yield svc, conf, record
    db.close()


def test_a_broken_registries_conf_never_makes_remove_a_silent_no_op(service: Any) -> None:
    svc, conf, record = service
    assert svc.status("busybox").id == record.id
    conf.write_text("unqualified-search-registries = [\n")  # an edit gone wrong
    with pytest.raises(FailedPrecondition) as info:
        svc.remove("busybox")
    assert str(conf) in info.value.message
    assert svc.store.get(record.id) is not None
    # names that need no short-name resolution still work
    assert svc.status("docker.io/library/busybox:latest").id == record.id
    assert svc.status(record.id).id == record.id
    svc.remove(record.id)
    assert svc.store.get(record.id) is None


def test_a_broken_registries_conf_fails_pulls_as_failed_precondition(service: Any) -> None:
    svc, conf, _record = service
    conf.write_text("[[registry]\n")
    with pytest.raises(FailedPrecondition) as info:
        svc.pull("alpine", None, CallContext.with_timeout(5))
    assert str(conf) in info.value.message
