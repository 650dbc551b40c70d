"""The image store: blobs, layers, images, names, collection, leases, holds, recovery."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import oci.image.store as image_store
from base.cancel import CallContext
from base.db import Database
from base.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from oci.image.store import ImageRecord, ImageStore


class Env:
    """A store in a scratch dir, plus helpers to make layer blobs and images."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.db = Database(top / "state.db")
        self.store = ImageStore(top / "images", self.db)
        self.ctx = CallContext()
        self._n = 0

    def reopen(self) -> ImageStore:
        """A new store on the same disk and database: what a restart sees."""
        self.store = ImageStore(self.top / "images", self.db)
        return self.store

    def layer(self, files: dict[str, bytes]) -> tuple[Path, str]:
        """A plain tar layer blob and its diff_id."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        self._n += 1
        blob = self.top / f"blob{self._n}.tar"
        blob.write_bytes(buf.getvalue())
        return blob, "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()

    def image(
        self, layers: list[tuple[Path, str]], names: list[str], salt: str = ""
    ) -> ImageRecord:
        """Unpack ``layers`` under a lease and record an image with ``names``."""
        diff_ids = [d for _, d in layers]
        config_bytes = config_for(diff_ids, salt)
        manifest = json.dumps({"config": sha(config_bytes), "layers": diff_ids}).encode()
        with self.store.lease() as lease:
            self.store.put_blob(sha(manifest), manifest, lease)
            for blob, diff_id in layers:
                self.store.ensure_layer(diff_id, blob, "none", lease, self.ctx)
            return self.store.add_image(
                image_id=sha(config_bytes),
                manifest_digest=sha(manifest),
                manifest_media_type="application/vnd.oci.image.manifest.v1+json",
                config_json=config_bytes,
                size=123,
                layers=[(d, "sha256:" + "b" * 64) for d in diff_ids],
                names=names,
                lease=lease,
            )


def config_for(diff_ids: list[str], salt: str) -> bytes:
    return json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}, "s": salt}).encode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def env() -> Iterator[Env]:
    top = Path(tempfile.mkdtemp(prefix="peapod-store-test-"))
    e = Env(top)
    try:
        yield e
    finally:
        e.db.close()
        shutil.rmtree(top, ignore_errors=True)


def layer_rows(env: Env) -> set[str]:
    return {r["diff_id"] for r in env.db.query("SELECT diff_id FROM layers")}


# ---- images and names -------------------------------------------------------------------------


def test_add_and_resolve_by_every_reference_kind(env: Env) -> None:
    l1 = env.layer({"etc/os-release": b"peapod"})
    rec = env.image([l1], ["example.com/app:1.0", "example.com/app@sha256:" + "d" * 64])
    hexid = rec.id.removeprefix("sha256:")
    assert rec.repo_tags == ("example.com/app:1.0",)
    assert rec.repo_digests == ("example.com/app@sha256:" + "d" * 64,)
    assert rec.layers == (l1[1],)
    assert rec.config["rootfs"]["diff_ids"] == [l1[1]]
    for ref in (
        rec.id,
        hexid,
        hexid[:3],
        hexid[:12],
        "sha256:" + hexid[:5],
        "example.com/app:1.0",
        "example.com/app@sha256:" + "d" * 64,
    ):
        assert env.store.resolve(ref) == rec, ref
    for ref in ("", hexid[:2], "example.com/app:2.0", "example.com/app", "zzz", hexid.upper()):
        assert env.store.resolve(ref) is None, ref
    assert env.store.get(rec.id) == rec
    assert env.store.list() == [rec]
    assert (env.store.layer_dir(l1[1]) / "etc/os-release").read_bytes() == b"peapod"
    # the records survive a restart unchanged
    assert env.reopen().resolve("example.com/app:1.0") == rec


def test_ambiguous_id_prefix_names_the_candidates(env: Env) -> None:
    by_prefix: dict[str, str] = {}
    for i in range(5000):
        prefix = sha(config_for([], str(i)))[7:10]
        if prefix in by_prefix:
            break
        by_prefix[prefix] = str(i)
    a = env.image([], ["r/a:1"], salt=by_prefix[prefix])
    b = env.image([], ["r/b:1"], salt=str(i))
    assert a.id[7:10] == b.id[7:10] == prefix
    with pytest.raises(InvalidArgument) as err:
        env.store.resolve(prefix)
    assert a.id[7:19] in err.value.message and b.id[7:19] in err.value.message
    assert err.value.reason == "AMBIGUOUS_IMAGE_ID"
    differ = next(k for k in range(64) if a.id[7 + k] != b.id[7 + k])
    assert env.store.resolve(a.id[7 : 8 + differ]) == a
    assert env.store.resolve(b.id[7 : 8 + differ]) == b


def test_tag_moves_to_the_new_image_and_the_old_one_stays(env: Env) -> None:
    l1, l2 = env.layer({"a": b"1"}), env.layer({"a": b"2"})
    old = env.image([l1], ["r/app:latest", "r/app:v1", "r/app@sha256:" + "1" * 64])
    new = env.image([l2], ["r/app:latest", "r/app@sha256:" + "2" * 64])
    assert env.store.resolve("r/app:latest") == new
    kept = env.store.get(old.id)
    assert kept is not None
    assert kept.repo_tags == ("r/app:v1",)
    assert kept.repo_digests == ("r/app@sha256:" + "1" * 64,)
    # losing its last tag leaves the image present, untagged
    env.image([l2], ["r/app:v1"])
    kept = env.store.get(old.id)
    assert kept is not None and kept.repo_tags == ()
    assert env.store.has_layer(l1[1])
    reopened = env.reopen()
    assert reopened.get(old.id) == kept
    assert reopened.resolve("r/app:v1") == reopened.get(new.id)


def test_adding_a_present_image_only_adds_names(env: Env) -> None:
    l1 = env.layer({"x": b"x"})
    first = env.image([l1], ["r/a:1"])
    again = env.image([l1], ["r/a:1", "r/b:2"])
    assert again.id == first.id and again.created_at == first.created_at
    assert again.repo_tags == ("r/a:1", "r/b:2")
    assert len(env.store.list()) == 1


def test_add_image_checks_its_inputs(env: Env) -> None:
    config = b'{"rootfs": {}}'
    args = {
        "image_id": sha(config),
        "manifest_digest": "sha256:" + "e" * 64,
        "manifest_media_type": "m",
        "config_json": config,
        "size": 1,
        "layers": [("sha256:" + "f" * 64, "sha256:" + "f" * 64)],
        "names": ["r/a:1"],
    }
    with pytest.raises(FailedPrecondition) as err:
        env.store.add_image(**args)  # type: ignore[arg-type]
    assert err.value.reason == "LAYER_MISSING"
    with pytest.raises(DataLoss):
        env.store.add_image(**{**args, "image_id": "sha256:" + "0" * 64})  # type: ignore[arg-type]
    for bad in (["r/a"], ["r/a@sha256:12"], [""]):
        with pytest.raises(InvalidArgument):
            env.store.add_image(**{**args, "names": bad, "layers": []})  # type: ignore[arg-type]
    assert env.store.list() == [] and env.db.query("SELECT * FROM images") == []


def test_lower_dirs_top_first_without_repeats(env: Env) -> None:
    l1, l2 = env.layer({"a": b"1"}), env.layer({"b": b"2"})
    rec = env.image([l1, l2, l1], ["r/x:1"])
    assert rec.layers == (l1[1], l2[1], l1[1])
    assert env.store.lower_dirs(rec.id) == [
        env.store.layer_dir(l1[1]),
        env.store.layer_dir(l2[1]),
    ]
    with pytest.raises(NotFound):
        env.store.lower_dirs("sha256:" + "0" * 64)


def test_pinning(env: Env) -> None:
    rec = env.image([], ["r/pause:3"])
    assert not rec.pinned
    env.store.set_pinned(rec.id, True)
    assert env.store.get(rec.id).pinned  # type: ignore[union-attr]
    assert env.reopen().get(rec.id).pinned  # type: ignore[union-attr]


# ---- removal and collection -------------------------------------------------------------------


def test_remove_keeps_shared_layers_and_collects_the_rest(env: Env) -> None:
    shared, only_a, only_b = env.layer({"s": b"s"}), env.layer({"a": b"a"}), env.layer({"b": b"b"})
    a = env.image([shared, only_a], ["r/a:1"])
    b = env.image([shared, only_b], ["r/b:1"])
    env.store.remove(a.id)
    assert env.store.get(a.id) is None and env.store.resolve("r/a:1") is None
    assert env.store.has_layer(shared[1]) and env.store.layer_dir(shared[1]).is_dir()
    assert not env.store.has_layer(only_a[1])
    assert not env.store.layer_dir(only_a[1]).parent.exists()
    assert layer_rows(env) == {shared[1], only_b[1]}
    assert not env.store.has_blob(a.id) and not env.store.blob_path(a.id).exists()
    assert not env.store.has_blob(a.manifest_digest)
    assert env.store.has_blob(b.id) and env.store.has_blob(b.manifest_digest)
    assert env.store.resolve("r/b:1") == b
    env.store.remove(b.id)
    env.store.remove(b.id)  # idempotent
    assert layer_rows(env) == set() and env.store.list() == []
    assert not any((env.top / "images/layers").iterdir())
    assert not any((env.top / "images/blobs/sha256").iterdir())
    assert not any((env.top / "images/tmp").iterdir())  # the collected trees are gone too
    assert env.store.fs_usage().used_bytes == 0 and env.store.fs_usage().inodes_used == 0


def test_concurrent_removes_of_one_image_all_succeed(env: Env) -> None:
    layer = env.layer({"f": b"data"})
    rec = env.image([layer], ["r/a:1"])
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def remove() -> None:
        start.wait()
        try:
            env.store.remove(rec.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=remove) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert env.store.get(rec.id) is None and not env.store.has_layer(layer[1])
    assert layer_rows(env) == set()


def test_a_lease_keeps_layers_from_collection_until_it_ends(env: Env) -> None:
    layer, fresh = env.layer({"f": b"1"}), env.layer({"g": b"2"})
    rec = env.image([layer], ["r/a:1"])
    lease = env.store.lease()
    assert env.store.keep_layer(layer[1], lease)
    env.store.ensure_layer(fresh[1], fresh[0], "none", lease, env.ctx)
    env.store.remove(rec.id)  # a concurrent RemoveImage during a pull
    assert env.store.has_layer(layer[1]) and env.store.layer_dir(layer[1]).is_dir()
    assert env.store.has_layer(fresh[1])
    lease.close()
    assert not env.store.has_layer(layer[1]) and not env.store.has_layer(fresh[1])
    assert layer_rows(env) == set()
    assert not env.store.layer_dir(layer[1]).parent.exists()
    with pytest.raises(FailedPrecondition):
        env.store.keep_layer(layer[1], lease)
    assert not env.store.keep_layer(layer[1], env.store.lease())


def test_a_finished_pull_no_longer_needs_its_lease(env: Env) -> None:
    layer = env.layer({"f": b"1"})
    rec = env.image([layer], ["r/a:1"])  # the lease ended inside
    assert env.store.has_layer(layer[1]) and env.store.has_blob(rec.manifest_digest)


def test_holds_keep_layers_after_removal_and_across_restarts(env: Env) -> None:
    layer, other = env.layer({"f": b"1"}), env.layer({"g": b"2"})
    rec = env.image([layer, other], ["r/a:1"])
    dirs = env.store.hold("container-1", rec.id)
    assert dirs == env.store.lower_dirs(rec.id)
    env.store.hold("container-1", rec.id)  # again: no change
    env.store.remove(rec.id)
    assert all(d.is_dir() for d in dirs)
    store = env.reopen()
    assert store.has_layer(layer[1]) and store.has_layer(other[1])
    store.release("container-1")
    store.release("container-1")
    assert not store.has_layer(layer[1]) and layer_rows(env) == set()
    assert not any(d.exists() for d in dirs)
    with pytest.raises(NotFound):
        store.hold("container-2", rec.id)


# ---- layers -----------------------------------------------------------------------------------


def test_concurrent_ensure_layer_unpacks_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    blob, diff_id = env.layer({f"f{i}": b"x" * i for i in range(50)})
    calls: list[int] = []
    real = image_store.unpack_layer

    def slow_unpack(*args: object, **kwargs: object) -> object:
        calls.append(1)
        time.sleep(0.3)  # long enough for every caller to arrive meanwhile
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(image_store, "unpack_layer", slow_unpack)
    results: list[object] = []
    start = threading.Barrier(6)
    with env.store.lease() as lease:

        def ensure() -> None:
            start.wait()
            results.append(env.store.ensure_layer(diff_id, blob, "none", lease, env.ctx))

        threads = [threading.Thread(target=ensure) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(calls) == 1
        assert sorted(r.reused for r in results) == [False] + [True] * 5  # type: ignore[attr-defined]
        assert {r.diff_id for r in results} == {diff_id}  # type: ignore[attr-defined]


def test_a_waiter_unpacks_itself_when_the_first_unpack_fails(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, diff_id = env.layer({"f": b"1"})
    real = image_store.unpack_layer
    calls: list[int] = []

    def fail_first(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)
            raise DataLoss("first download was bad")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(image_store, "unpack_layer", fail_first)
    outcome: list[object] = []
    with env.store.lease() as lease:

        def ensure() -> None:
            try:
                outcome.append(env.store.ensure_layer(diff_id, blob, "none", lease, env.ctx))
            except DataLoss as exc:
                outcome.append(exc)

        first = threading.Thread(target=ensure)
        first.start()
        time.sleep(0.05)
        ensure()
        first.join()
    assert len(calls) == 2
    assert isinstance(outcome[0], DataLoss)
    assert outcome[1].reused is False  # type: ignore[union-attr]


def test_ensure_layer_without_a_diff_id_computes_it(env: Env) -> None:
    blob, diff_id = env.layer({"f": b"1"})
    with env.store.lease() as lease:
        first = env.store.ensure_layer(None, blob, "none", lease, env.ctx)
        second = env.store.ensure_layer(None, blob, "none", lease, env.ctx)
        assert (first.diff_id, first.reused) == (diff_id, False)
        assert (second.diff_id, second.reused) == (diff_id, True)
        assert len(list((env.top / "images/layers").iterdir())) == 1
    assert not any((env.top / "images/tmp").iterdir())


def test_a_bad_layer_leaves_nothing_behind(env: Env) -> None:
    blob, _ = env.layer({"f": b"1"})
    with env.store.lease() as lease, pytest.raises(DataLoss) as err:
        env.store.ensure_layer("sha256:" + "0" * 64, blob, "none", lease, env.ctx)
    assert err.value.reason == "DIGEST_MISMATCH"
    assert not any((env.top / "images/layers").iterdir())
    assert not any((env.top / "images/tmp").iterdir())
    assert layer_rows(env) == set()


def test_fs_usage_adds_up_recorded_sizes(env: Env) -> None:
    l1, l2 = env.layer({"a": b"12345", "d/b": b"123"}), env.layer({"c": b"1"})
    rec = env.image([l1, l2], ["r/a:1"])
    blob_bytes = len(env.store.read_blob(rec.id)) + len(env.store.read_blob(rec.manifest_digest))
    usage = env.store.fs_usage()
    assert usage.path == env.top / "images"
    assert usage.used_bytes == 8 + 1 + blob_bytes
    # inodes: l1 root, a, d, d/b; l2 root, c; two blobs
    assert usage.inodes_used == 4 + 2 + 2
    assert env.reopen().fs_usage() == usage


# ---- blobs ------------------------------------------------------------------------------------


def test_blobs(env: Env) -> None:
    data = b'{"hello": "world"}'
    env.store.put_blob(sha(data), data)
    env.store.put_blob(sha(data), data)
    assert env.store.read_blob(sha(data)) == data and env.store.has_blob(sha(data))
    with pytest.raises(DataLoss) as err:
        env.store.put_blob("sha256:" + "0" * 64, data)
    assert err.value.reason == "DIGEST_MISMATCH"
    with pytest.raises(InvalidArgument):
        env.store.put_blob("md5:00", data)
    with pytest.raises(NotFound):
        env.store.read_blob("sha256:" + "0" * 64)
    tmp = env.store.tmp_path("a/../b c")
    assert tmp.parent == env.top / "images/tmp" and "/" not in tmp.name and not tmp.exists()
    assert not any((env.top / "images/tmp").iterdir())
    # a blob no image references is removed at the next start
    assert not env.reopen().has_blob(sha(data))


# ---- recovery ---------------------------------------------------------------------------------


def test_start_up_removes_what_a_crash_left(env: Env) -> None:
    kept = env.layer({"k": b"keep"})
    rec = env.image([kept], ["r/keep:1"])
    # a pull that crashed after unpacking, before add_image (its lease never ended)
    orphan = env.layer({"o": b"orphan"})
    lease = env.store.lease()
    env.store.ensure_layer(orphan[1], orphan[0], "none", lease, env.ctx)
    images = env.top / "images"
    (images / "tmp/layer-half").mkdir()
    (images / "tmp/layer-half/file").write_bytes(b"partial")
    (images / "tmp/download").write_bytes(b"partial")
    (images / "layers" / ("9" * 64) / "diff").mkdir(parents=True)  # renamed, not committed
    (images / "blobs/sha256" / ("8" * 64)).write_bytes(b"stray")
    store = env.reopen()
    assert not store.has_layer(orphan[1]) and not store.layer_dir(orphan[1]).parent.exists()
    assert layer_rows(env) == {kept[1]}
    assert not any((images / "tmp").iterdir())
    assert not (images / "layers" / ("9" * 64)).exists()
    assert not (images / "blobs/sha256" / ("8" * 64)).exists()
    assert store.resolve("r/keep:1") == rec and store.has_layer(kept[1])
    assert store.read_blob(rec.id) and store.read_blob(rec.manifest_digest)


def test_an_image_whose_layer_vanished_is_dropped_at_start(env: Env) -> None:
    good, lost = env.layer({"g": b"1"}), env.layer({"l": b"2"})
    ok = env.image([good], ["r/ok:1"])
    broken = env.image([good, lost], ["r/broken:1"])
    shutil.rmtree(env.store.layer_dir(lost[1]).parent)
    env.store.blob_path(ok.id).unlink()  # a lost config blob is rewritten from the database
    store = env.reopen()
    assert store.get(broken.id) is None and store.resolve("r/broken:1") is None
    assert store.get(ok.id) == ok and store.has_layer(good[1]) and not store.has_layer(lost[1])
    assert store.read_blob(ok.id) == env.db.query("SELECT config_json FROM images")[0][0].encode()


# ---- the in-memory index ----------------------------------------------------------------------


def test_reads_are_fast_and_never_touch_sqlite(env: Env) -> None:
    records = [env.image([], [f"r/img{i}:latest"], salt=str(i)) for i in range(200)]
    env.db.close()  # any read that reached SQLite would now fail
    started = time.perf_counter()
    for rec in records:
        assert env.store.resolve(rec.id[7:19]) == rec
        assert env.store.resolve(rec.repo_tags[0]) == rec
        assert env.store.resolve(rec.id) == rec
    per_call = (time.perf_counter() - started) / (3 * len(records))
    assert len(env.store.list()) == 200 and env.store.fs_usage().inodes_used == 400
    assert per_call < 0.001, f"{per_call * 1e6:.0f} µs per resolve"
    env.db = Database(env.top / "state.db")  # for the fixture's close


def test_a_blob_that_does_not_fit_is_resource_exhausted(env: Env) -> None:
    """Disk full while storing a manifest or config names the blob, not 'internal error'."""
    import os
    import subprocess

    from base.errors import ResourceExhausted

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = env.top / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        store = ImageStore(small / "images", env.db, sync=False)
        data = b"x" * 256 * 1024
        with store.lease() as lease, pytest.raises(ResourceExhausted) as info:
            store.put_blob(sha(data), data, lease)
        assert sha(data) in info.value.message and "space" in info.value.message
        assert not store.has_blob(sha(data))
        assert list((small / "images" / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
