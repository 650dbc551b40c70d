"""Layer unpacking: entry kinds, metadata, whiteouts in overlay form, unsafe paths, digests."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.cancel import CallContext
from base.errors import Cancelled, DataLoss, InvalidArgument, NotFound
from oci.image.unpack import UnpackResult, unpack_layer

MTIME = 1_600_000_000


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch directory removed afterwards, pass or fail."""
    path = Path(tempfile.mkdtemp(prefix="peapod-unpack-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def make_tar(*items: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for item in items:
            info, data = item if isinstance(item, tuple) else (item, b"")
            if info.isreg():
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def file(name: str, data: bytes, **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, **attrs), data


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def unpack(
    work: Path, tar: bytes, compression: str = "none", expected: str | None = None
) -> tuple[Path, UnpackResult]:
    blob = work / "blob"
    blob.write_bytes(tar)
    dest = work / "layer"
    return dest, unpack_layer(blob, compression, dest, CallContext(), expected)  # type: ignore[arg-type]


# ---- entry kinds and metadata -----------------------------------------------------------------


def test_files_dirs_modes_ownership_and_mtimes(work: Path) -> None:
    tar = make_tar(
        entry("./", tarfile.DIRTYPE, mode=0o750),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777, uid=0, gid=0, mtime=1_000_000_000),
        file("tmp/a", b"hello", uid=1234, gid=5678, mode=0o640),
        file("bin/su", b"#!", mode=0o4755),
        file("bin/wall", b"", mode=0o2755, gid=5),
    )
    dest, result = unpack(work, tar)
    assert result.diff_id == digest(tar)  # covers the whole stream, padding included
    assert result.size == 7
    assert result.inodes == 6  # root, tmp, tmp/a, bin (implicit), bin/su, bin/wall
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750
    tmp = (dest / "tmp").stat()
    assert stat.S_IMODE(tmp.st_mode) == 0o1777
    assert tmp.st_mtime_ns == 1_000_000_000 * 10**9  # set after its contents were created
    a = (dest / "tmp/a").stat()
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (1234, 5678, 0o640)
    assert a.st_mtime_ns == MTIME * 10**9
    assert (dest / "tmp/a").read_bytes() == b"hello"
    assert stat.S_IMODE((dest / "bin/su").stat().st_mode) == 0o4755
    wall = (dest / "bin/wall").stat()
    assert (stat.S_IMODE(wall.st_mode), wall.st_gid) == (0o2755, 5)
    assert stat.S_IMODE((dest / "bin").stat().st_mode) == 0o755


def test_symlinks_hardlinks_devices_and_fifos(work: Path) -> None:
    tar = make_tar(
        file("etc/passwd", b"root:x:0:0\n", uid=7),
        entry("etc/link", tarfile.SYMTYPE, linkname="/etc/passwd", uid=3, gid=4),
        entry("etc/passwd-", tarfile.LNKTYPE, linkname="etc/passwd"),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, gid=6),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600, uid=9),
    )
    dest, result = unpack(work, tar)
    link = os.lstat(dest / "etc/link")
    assert stat.S_ISLNK(link.st_mode) and (link.st_uid, link.st_gid) == (3, 4)
    assert os.readlink(dest / "etc/link") == "/etc/passwd"
    assert link.st_mtime_ns == MTIME * 10**9
    a, b = (dest / "etc/passwd").stat(), (dest / "etc/passwd-").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and b.st_uid == 7
    null = (dest / "dev/null").stat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    loop = (dest / "dev/loop0").stat()
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0) and loop.st_gid == 6
    fifo = (dest / "run/fifo").stat()
    assert stat.S_ISFIFO(fifo.st_mode) and fifo.st_uid == 9
    # root, etc, passwd, link, dev, null, loop0, run, fifo: the hard link adds no inode
    assert result.inodes == 9
    assert result.size == len(b"root:x:0:0\n")


def test_xattrs_from_pax_headers(work: Path) -> None:
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    ping = entry("bin/ping")
    ping.pax_headers = {
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.note": "héllo",
        "SCHILY.xattr.trusted.overlay.opaque": "y",  # never taken from content
    }
    d = entry("data", tarfile.DIRTYPE)
    d.pax_headers = {"LIBARCHIVE.xattr.user.a%3Db": "dmFsdWU"}  # base64 without padding
    tar = make_tar((ping, b"ELF"), d)
    dest, _ = unpack(work, tar)
    assert os.getxattr(dest / "bin/ping", "security.capability") == cap
    assert os.getxattr(dest / "bin/ping", "user.note") == "héllo".encode()
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "bin/ping")
    assert os.getxattr(dest / "data", "user.a=b") == b"value"


def test_later_entries_replace_earlier_ones(work: Path) -> None:
    tar = make_tar(
        file("a", b"first version"),
        file("a", b"second"),
        file("b", b"a file"),
        entry("b", tarfile.DIRTYPE),
        file("b/inside", b"x"),
        entry("c", tarfile.DIRTYPE),
        file("c/deep/file", b"12345"),
        entry("c", tarfile.SYMTYPE, linkname="b"),
        entry("d", tarfile.DIRTYPE, mode=0o700),
        entry("d", tarfile.DIRTYPE, mode=0o711),  # a dir over a dir keeps its contents
    )
    dest, result = unpack(work, tar)
    assert (dest / "a").read_bytes() == b"second"
    assert (dest / "b/inside").read_bytes() == b"x"
    assert os.readlink(dest / "c") == "b"
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o711
    assert result.size == len(b"second") + 1
    assert result.inodes == 6  # root, a, b, b/inside, c, d


def test_replacing_hard_linked_entries_keeps_counts(work: Path) -> None:
    tar = make_tar(
        file("h1", b"shared"),
        entry("h2", tarfile.LNKTYPE, linkname="h1"),
        file("h1", b"new!"),  # h2 still holds the old inode
        file("d/in", b"12345"),
        entry("out", tarfile.LNKTYPE, linkname="d/in"),
        file("d/only", b"123"),
        entry("d", tarfile.SYMTYPE, linkname="/"),  # frees d, d/only; d/in lives on as out
    )
    dest, result = unpack(work, tar)
    assert (dest / "h2").read_bytes() == b"shared" and (dest / "h1").read_bytes() == b"new!"
    assert (dest / "out").read_bytes() == b"12345"
    assert result.size == len(b"shared") + len(b"new!") + len(b"12345")
    assert result.inodes == 5  # root, h1, h2, out, d


def test_absolute_and_dotted_names_stay_inside(work: Path) -> None:
    tar = make_tar(file("/etc/hostname", b"h"), file("./x/../y", b"y"), file("z/./w", b"w"))
    dest, _ = unpack(work, tar)
    assert (dest / "etc/hostname").read_bytes() == b"h"
    assert (dest / "y").read_bytes() == b"y"
    assert (dest / "z/w").read_bytes() == b"w"
    assert not (work / "x").exists()


def test_gnu_sparse_file(work: Path) -> None:
    src = work / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"tail")
    tar = subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-C", str(src), "-cf", "-", "sparse"],
        capture_output=True,
        check=True,
    ).stdout
    dest, _ = unpack(work, tar)
    data = (dest / "sparse").read_bytes()
    assert len(data) == (1 << 20) + 4 and data.endswith(b"tail") and not data[:-4].strip(b"\0")


# ---- whiteouts --------------------------------------------------------------------------------


def test_whiteouts_become_overlay_form_and_work_when_mounted(work: Path) -> None:
    lower_tar = make_tar(
        file("a/x", b"x"),
        file("a/y", b"y"),
        file("b", b"b"),
        file("c/old", b"old"),
        file("keep", b"keep"),
    )
    upper_tar = make_tar(
        entry("a/.wh.x"),
        entry(".wh.b"),
        entry("c", tarfile.DIRTYPE),
        entry("c/.wh..wh..opq"),
        file("c/new", b"new"),
        entry("d/.wh..wh..opq"),  # its directory is implied
    )
    (work / "lower.tar").write_bytes(lower_tar)
    (work / "upper.tar").write_bytes(upper_tar)
    lower, upper = work / "lower", work / "upper"
    ctx = CallContext()
    unpack_layer(work / "lower.tar", "none", lower, ctx)
    unpack_layer(work / "upper.tar", "none", upper, ctx)

    for name in ("a/x", "b"):
        st = os.lstat(upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(upper / "c", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"
    assert not any(p.name.startswith(".wh.") for p in upper.rglob("*"))

    merged = work / "merged"
    merged.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower}", str(merged)],
        check=True,
        capture_output=True,
    )
    try:
        assert sorted(p.name for p in merged.iterdir()) == ["a", "c", "d", "keep"]
        assert sorted(p.name for p in (merged / "a").iterdir()) == ["y"]
        assert sorted(p.name for p in (merged / "c").iterdir()) == ["new"]
        assert (merged / "keep").read_bytes() == b"keep"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_file_after_its_whiteout_replaces_it(work: Path) -> None:
    dest, _ = unpack(work, make_tar(entry(".wh.f"), file("f", b"back")))
    assert (dest / "f").read_bytes() == b"back"


# ---- unsafe content ---------------------------------------------------------------------------


def tree(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")} - {"blob"}


def assert_refused(work: Path, tar: bytes, words: str) -> None:
    before = tree(work)
    with pytest.raises(DataLoss) as err:
        unpack(work, tar)
    assert words in err.value.message
    assert err.value.reason == "UNSAFE_LAYER_PATH"
    assert tree(work) == before  # nothing written anywhere; the partial layer is gone


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/../evil"])
def test_dotdot_escape_is_refused(work: Path, name: str) -> None:
    assert_refused(work, make_tar(file("ok", b"1"), file(name, b"bad")), repr(name))
    assert not (work / "evil").exists()
    assert not (work.parent / "evil").exists()


def test_writing_through_a_layer_symlink_is_refused(work: Path) -> None:
    outside = work / "outside"
    outside.mkdir()
    tar = make_tar(
        entry("link", tarfile.SYMTYPE, linkname=str(outside)),
        file("link/pwned", b"bad"),
    )
    assert_refused(work, tar, "symlink 'link'")
    assert list(outside.iterdir()) == []


def test_relative_symlink_to_parent_is_refused(work: Path) -> None:
    tar = make_tar(
        entry("up", tarfile.SYMTYPE, linkname=".."),
        entry("up/.wh.blob"),  # even whiteouts are not written through it
    )
    assert_refused(work, tar, "symlink 'up'")
    assert (work / "blob").exists()


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd", "missing", "dir"])
def test_hard_link_must_point_at_an_earlier_file_of_the_layer(work: Path, target: str) -> None:
    (work / "outside").write_text("secret")
    tar = make_tar(entry("dir", tarfile.DIRTYPE), entry("h", tarfile.LNKTYPE, linkname=target))
    with pytest.raises(DataLoss) as err:
        unpack(work, tar)
    assert "hard link" in err.value.message or "outside the layer" in err.value.message
    assert (work / "outside").stat().st_nlink == 1
    assert not (work / "layer").exists()


def test_file_in_place_of_a_needed_directory_is_refused(work: Path) -> None:
    assert_refused(work, make_tar(file("f", b"1"), file("f/g", b"2")), "'f' to be a directory")


# ---- digests, compression, corrupt input ------------------------------------------------------


def sample_tar() -> bytes:
    return make_tar(*(file(f"dir{i % 7}/file{i}", os.urandom(i * 37)) for i in range(50)))


def member_offset(tar: bytes, index: int) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return tf.getmembers()[index].offset


HDR = member_offset(sample_tar(), 4)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_every_compression_gives_the_uncompressed_digest(work: Path, compression: str) -> None:
    tar = sample_tar()
    blob = {"none": tar, "gzip": gzip.compress(tar), "zstd": zstd(tar)}[compression]
    dest, result = unpack(work, blob, compression, expected=digest(tar))
    assert result.diff_id == digest(tar)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        expected = tf.extractfile("dir3/file10").read()  # type: ignore[union-attr]
    assert (dest / "dir3/file10").read_bytes() == expected


def test_multi_member_gzip_and_zero_padding(work: Path) -> None:
    tar = sample_tar()
    blob = gzip.compress(tar[:5000]) + gzip.compress(tar[5000:]) + b"\0" * 100
    _, result = unpack(work, blob, "gzip")
    assert result.diff_id == digest(tar)


def test_diff_id_mismatch(work: Path) -> None:
    with pytest.raises(DataLoss) as err:
        unpack(work, sample_tar(), "none", expected="sha256:" + "0" * 64)
    assert err.value.reason == "DIGEST_MISMATCH"
    assert "sha256:" + "0" * 64 in err.value.message
    assert not (work / "layer").exists()


@pytest.mark.parametrize(
    ("compression", "mangle"),
    [
        ("gzip", lambda b: b[: len(b) // 2]),  # truncated
        ("gzip", lambda b: b[:100] + bytes(255 - x for x in b[100:200]) + b[200:]),
        ("gzip", lambda b: b + b"garbage"),
        ("zstd", lambda b: b[: len(b) // 2]),
        ("zstd", lambda b: b"not zstd at all"),
        ("none", lambda b: b[:700]),  # truncated inside a file
        ("none", lambda b: b[:HDR] + b"x" * 512 + b[HDR + 512 :]),  # a garbage header mid-way
    ],
)
def test_corrupt_blobs_are_data_loss(work: Path, compression: str, mangle: object) -> None:
    tar = sample_tar()
    packed = {"none": tar, "gzip": gzip.compress(tar), "zstd": zstd(tar)}[compression]
    with pytest.raises(DataLoss) as err:
        unpack(work, mangle(packed), compression)  # type: ignore[operator]
    assert err.value.reason == "INVALID_LAYER"
    assert not (work / "layer").exists()


def test_empty_layers(work: Path) -> None:
    for blob in (b"\0" * 1024, b""):
        shutil.rmtree(work / "layer", ignore_errors=True)
        dest, result = unpack(work, gzip.compress(blob), "gzip")
        assert result == UnpackResult(digest(blob), 0, 1)
        assert list(dest.iterdir()) == []


def test_cancellation_stops_and_cleans_up(work: Path) -> None:
    (work / "blob").write_bytes(make_tar(*(entry(f"f{i}") for i in range(600))))
    ctx = CallContext()
    ctx.cancel()
    with pytest.raises(Cancelled):
        unpack_layer(work / "blob", "none", work / "layer", ctx)
    assert not (work / "layer").exists()


def test_bad_arguments(work: Path) -> None:
    (work / "blob").write_bytes(make_tar())
    (work / "exists").mkdir()
    ctx = CallContext()
    with pytest.raises(InvalidArgument, match="already exists"):
        unpack_layer(work / "blob", "none", work / "exists", ctx)
    with pytest.raises(NotFound):
        unpack_layer(work / "nope", "none", work / "layer", ctx)
    with pytest.raises(InvalidArgument, match="compression"):
        unpack_layer(work / "blob", "bzip2", work / "layer", ctx)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="diff_id"):
        unpack_layer(work / "blob", "none", work / "layer", ctx, "md5:abc")
    assert not (work / "layer").exists()
