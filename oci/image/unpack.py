"""Unpack one OCI image layer (a tar stream) into a new directory, ready as an overlay lowerdir.

The blob is decompressed as a stream (``oci.image.decompress``),
hashed to give the layer's diff_id, parsed with ``tarfile`` (headers only) and every
entry is created here with plain syscalls, which is several times faster than
``TarFile.extract`` and lets us refuse unsafe paths before touching the disk.

OCI whiteouts are converted to overlayfs form: ``.wh.NAME`` becomes a 0/0 character
device ``NAME`` and ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its directory.
Paths are resolved lexically inside the layer; a member whose path leaves the layer,
or would be written through a symlink the layer created, is refused. Must run as root
(it sets ownership and makes device nodes).
"""

from __future__ import annotations

import base64
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import unquote

from base.cancel import CallContext
from base.errors import DataLoss, Internal, InvalidArgument, NotFound, ResourceExhausted
from oci.image.decompress import Prefetch, Source, open_source

Compression = Literal["gzip", "zstd", "none"]

_CHECK_EVERY = 256  # members between cancellation checks
_OPAQUE = ".wh..wh..opq"
_WHITEOUT = ".wh."
_REGULAR = frozenset(tarfile.REGULAR_TYPES)
_DEVICES = {
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class UnpackResult:
    """What an unpacked layer is and what it costs on disk."""

    diff_id: str  # sha256 of the uncompressed tar stream, "sha256:<hex>"
    size: int  # bytes of regular-file content (hard links counted once)
    inodes: int  # inodes created: the root, dirs, files, symlinks, devices, whiteouts


def unpack_layer(
    blob: Path,
    compression: Compression,
    dest: Path,
    ctx: CallContext,
    expected_diff_id: str | None = None,
) -> UnpackResult:
    """Unpack the layer ``blob`` into ``dest``, which must not exist (its parent must).

    ``dest`` is created here; on any error it is removed again, so the caller sees
    either a complete layer or nothing. Raises DataLoss for corrupt or unsafe
    content and DataLoss(reason="DIGEST_MISMATCH") if the diff_id differs from
    ``expected_diff_id``.
    """
    if compression not in ("gzip", "zstd", "none"):
        raise InvalidArgument(f"unknown layer compression {compression!r}; use gzip, zstd or none")
    if expected_diff_id is not None:
        _check_digest(expected_diff_id)
    try:
        f = open(blob, "rb")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        raise NotFound(f"layer blob {blob} does not exist") from None
    try:
        try:
            os.mkdir(dest, 0o755)
        except FileExistsError:
            raise InvalidArgument(f"cannot unpack a layer into {dest}: it already exists") from None
        except FileNotFoundError:
            raise InvalidArgument(f"cannot unpack a layer into {dest}: no parent dir") from None
        try:
            result = _unpack(f, compression, dest, ctx, str(blob))
            if expected_diff_id is not None and result.diff_id != expected_diff_id:
                raise DataLoss(
                    f"layer {blob} unpacks to {result.diff_id}, but the image config "
                    f"says {expected_diff_id}",
                    reason="DIGEST_MISMATCH",
                )
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    finally:
        f.close()
    return result


def _unpack(f: BinaryIO, compression: str, dest: Path, ctx: CallContext, what: str) -> UnpackResult:
    source = Prefetch(open_source(f, compression, what))
    try:
        stream = _TarStream(source, ctx)
        writer = _Writer(os.fspath(dest), stream, what)
        for n, member in enumerate(_members(stream, what), 1):
            if n % _CHECK_EVERY == 0:
                ctx.check()
            writer.add(member)
        stream.drain()  # the diff_id covers everything, trailing padding included
    finally:
        source.close()
    writer.finish()
    return UnpackResult("sha256:" + source.hexdigest(), writer.size, writer.inodes)


def _check_digest(digest: str) -> None:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not _is_hex(hexpart):
        raise InvalidArgument(f"diff_id {digest!r} is not of the form sha256:<64 hex digits>")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


class _TarStream:
    """A forward-only file object over decompressed chunks, read by TarFile."""

    def __init__(self, source: Source, ctx: CallContext) -> None:
        self._source = source
        self._ctx = ctx
        self._buf = b""
        self._off = 0
        self._pos = 0
        self._fills = 0

    def _fill(self) -> bool:
        chunk = self._source.read_chunk()
        self._fills += 1
        if self._fills % 64 == 0:
            self._ctx.check()
        if not chunk:
            return False
        self._buf = chunk
        self._off = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise ValueError("layer streams are read in bounded pieces")
        buf, off = self._buf, self._off
        end = off + size
        if end <= len(buf):
            self._off = end
            self._pos += size
            return buf[off:end]
        parts = [buf[off:]]
        need = size - (len(buf) - off)
        self._buf, self._off = b"", 0
        while need > 0 and self._fill():
            take = min(need, len(self._buf))
            parts.append(self._buf[:take])
            self._off = take
            need -= take
        out = b"".join(parts)
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or pos < self._pos:
            raise OSError(errno.ESPIPE, "layer streams only move forwards")
        self.skip(pos - self._pos)
        return self._pos

    def skip(self, size: int) -> None:
        while size > 0:
            avail = len(self._buf) - self._off
            if avail == 0:
                if not self._fill():
                    return
                continue
            take = min(avail, size)
            self._off += take
            self._pos += take
            size -= take

    def copy_to(self, fd: int, size: int) -> int:
        """Write the next ``size`` bytes to ``fd``; return how many were there."""
        done = 0
        while done < size:
            avail = len(self._buf) - self._off
            if avail == 0:
                if not self._fill():
                    break
                continue
            take = min(avail, size - done)
            view = memoryview(self._buf)[self._off : self._off + take]
            while view:
                view = view[os.write(fd, view) :]
            self._off += take
            self._pos += take
            done += take
        return done

    def drain(self) -> None:
        self._buf, self._off = b"", 0
        while self._fill():
            pass


# ---------------------------------------------------------------- tar members


class _Member(tarfile.TarInfo):
    """TarInfo that remembers why tarfile stopped, so corruption is not taken as the end."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            tf.peapod_bad_header = exc  # type: ignore[attr-defined]
            raise


def _members(stream: _TarStream, what: str) -> Iterator[tarfile.TarInfo]:
    try:
        tf = tarfile.TarFile(
            fileobj=stream,  # type: ignore[arg-type]
            mode="r",
            tarinfo=_Member,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except tarfile.ReadError as exc:
        if stream.tell() == 0 and str(exc) == "empty file":
            return  # a zero-byte stream: an empty layer
        raise DataLoss(
            f"layer {what} is not a tar archive: {exc}", reason="INVALID_LAYER"
        ) from None
    while True:
        try:
            member = tf.next()
        except tarfile.TarError as exc:
            raise DataLoss(f"layer {what} is corrupt: {exc}", reason="INVALID_LAYER") from None
        if member is None:
            break
        tf.members.clear()  # TarFile keeps every member otherwise
        yield member
    bad = getattr(tf, "peapod_bad_header", None)
    if bad is not None:
        raise DataLoss(f"layer {what} is corrupt: {bad}", reason="INVALID_LAYER")


def _clean(name: str, what: str) -> str:
    """``name`` as a path relative to the layer root, ``..`` resolved lexically."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise DataLoss(
                    f"layer {what}: member {name!r} points outside the layer",
                    reason="UNSAFE_LAYER_PATH",
                )
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    mtime = member.mtime
    if isinstance(mtime, int):
        return mtime * 1_000_000_000
    text = member.pax_headers.get("mtime", "")
    whole, dot, frac = text.partition(".")
    if dot and whole.lstrip("-").isdigit() and frac.isdigit():  # exact, unlike the float
        ns = abs(int(whole)) * 1_000_000_000 + int((frac + "000000000")[:9])
        return -ns if whole.startswith("-") else ns
    return int(mtime * 1e9)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found.append((key[13:], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            raw = value.encode("ascii", "replace")
            found.append((unquote(key[17:]), base64.b64decode(raw + b"=" * (-len(raw) % 4))))
    # Overlay metadata comes only from whiteouts, never from layer content.
    return [(k, v) for k, v in found if k and not k.startswith("trusted.overlay.")]


class _Writer:
    """Creates members under the root, tracking what the layer made so far."""

    def __init__(self, root: str, stream: _TarStream, what: str) -> None:
        self.root = root
        self.stream = stream
        self.what = what
        # relpath -> "d" dir, "l" symlink, "f" anything else; "" is the root.
        self.kinds: dict[str, str] = {"": "d"}
        self.dir_mtimes: dict[str, int] = {}
        self.size = 0
        self.inodes = 1

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _unsafe(self, member: tarfile.TarInfo, why: str) -> DataLoss:
        return DataLoss(
            f"layer {self.what}: member {member.name!r} {why}", reason="UNSAFE_LAYER_PATH"
        )

    def add(self, m: tarfile.TarInfo) -> None:
        try:
            self._add(m)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(
                    f"no space left unpacking layer {self.what} (at {m.name!r}): {exc}",
                    reason="NO_SPACE",
                ) from None
            raise Internal(
                f"cannot unpack {m.name!r} from layer {self.what}: {exc}", reason="UNPACK_FAILED"
            ) from None
        except (ValueError, OverflowError) as exc:  # bad numbers or base64 in a header
            raise DataLoss(
                f"layer {self.what}: member {m.name!r} has invalid metadata: {exc}",
                reason="INVALID_LAYER",
            ) from None

    def _add(self, m: tarfile.TarInfo) -> None:
        rel = _clean(m.name, self.what)
        parent, _, base = rel.rpartition("/")
        if base.startswith(_WHITEOUT):
            self._whiteout(m, parent, base)
            return
        if not rel:
            if not m.isdir():
                raise self._unsafe(m, "replaces the layer root with a non-directory")
            self._dir_meta(m, rel)
            return
        if self.kinds.get(parent) != "d":
            self._make_parents(m, parent)
        existing = self.kinds.get(rel)
        if existing is not None:
            if existing == "d" and m.isdir():
                self._dir_meta(m, rel)
                return
            self._remove(rel, existing)
        path = f"{self.root}/{rel}"
        if m.type in _REGULAR or m.type not in tarfile.SUPPORTED_TYPES:
            self._file(m, path)
            self.kinds[rel] = "f"
        elif m.isdir():
            os.mkdir(path, 0o700)
            self.kinds[rel] = "d"
            self.inodes += 1
            self._dir_meta(m, rel)
        elif m.issym():
            os.symlink(m.linkname, path)
            self.kinds[rel] = "l"
            self.inodes += 1
            self._meta(m, path, chmod=False)
        elif m.islnk():
            self._hardlink(m, rel, path)
        elif m.type in _DEVICES:
            os.mknod(path, _DEVICES[m.type] | 0o600, os.makedev(m.devmajor, m.devminor))
            self.kinds[rel] = "f"
            self.inodes += 1
            self._meta(m, path, chmod=True)
        else:  # other supported types (GNU long-name headers) never reach here
            raise self._unsafe(m, f"has an entry type {m.type!r} peapod cannot unpack")

    def _file(self, m: tarfile.TarInfo, path: str) -> None:
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            if m.offset_data != self.stream.tell():
                self.stream.seek(m.offset_data)
            if m.sparse is not None:
                for offset, length in m.sparse:
                    os.lseek(fd, offset, os.SEEK_SET)
                    self._copy(m, fd, length)
                os.ftruncate(fd, m.size)
            elif m.size:
                self._copy(m, fd, m.size)
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)
            if m.pax_headers:
                for key, value in _xattrs(m):
                    os.setxattr(fd, key, value)
            ns = _mtime_ns(m)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        self.size += m.size
        self.inodes += 1

    def _copy(self, m: tarfile.TarInfo, fd: int, size: int) -> None:
        if self.stream.copy_to(fd, size) != size:
            raise DataLoss(
                f"layer {self.what} is truncated inside {m.name!r}", reason="INVALID_LAYER"
            )

    def _meta(self, m: tarfile.TarInfo, path: str, chmod: bool) -> None:
        """Ownership, mode, xattrs and mtime of a non-regular, non-directory entry."""
        os.lchown(path, m.uid, m.gid)
        if chmod:
            os.chmod(path, m.mode & 0o7777)
        if m.pax_headers:
            self._set_xattrs(m, path)
        ns = _mtime_ns(m)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def _dir_meta(self, m: tarfile.TarInfo, rel: str) -> None:
        path = self._path(rel)
        os.lchown(path, m.uid, m.gid)
        os.chmod(path, m.mode & 0o7777)
        if m.pax_headers:
            self._set_xattrs(m, path)
        self.dir_mtimes[rel] = _mtime_ns(m)  # set once the dir's contents are in

    def _set_xattrs(self, m: tarfile.TarInfo, path: str) -> None:
        for key, value in _xattrs(m):
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as exc:
                # Linux allows no user.* attributes on symlinks; tar tools skip them too.
                if not (m.issym() and exc.errno in (errno.EPERM, errno.ENOTSUP)):
                    raise

    def _hardlink(self, m: tarfile.TarInfo, rel: str, path: str) -> None:
        target = _clean(m.linkname, self.what)
        kind = self.kinds.get(target)
        if target == rel or kind is None or kind == "d":
            raise self._unsafe(
                m, f"is a hard link to {m.linkname!r}, which is not an earlier file of the layer"
            )
        os.link(self._path(target), path, follow_symlinks=False)
        self.kinds[rel] = "f"

    def _whiteout(self, m: tarfile.TarInfo, parent: str, base: str) -> None:
        if self.kinds.get(parent) != "d":
            self._make_parents(m, parent)
        if base == _OPAQUE:
            os.setxattr(self._path(parent), "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(_WHITEOUT + _WHITEOUT):
            return  # other AUFS metadata (.wh..wh.plnk, ...) has no overlay meaning
        name = base[len(_WHITEOUT) :]
        if name in ("", ".", ".."):
            raise self._unsafe(m, "is a whiteout of nothing")
        rel = f"{parent}/{name}" if parent else name
        existing = self.kinds.get(rel)
        if existing is not None:
            self._remove(rel, existing)
        os.mknod(self._path(rel), stat.S_IFCHR, os.makedev(0, 0))
        self.kinds[rel] = "f"
        self.inodes += 1

    def _make_parents(self, m: tarfile.TarInfo, parent: str) -> None:
        """Create missing directories on the way to ``parent``; refuse symlinks and files."""
        rel = ""
        for part in parent.split("/"):
            rel = f"{rel}/{part}" if rel else part
            kind = self.kinds.get(rel)
            if kind == "d":
                continue
            if kind == "l":
                raise self._unsafe(m, f"would be written through the symlink {rel!r}")
            if kind is not None:
                raise self._unsafe(m, f"needs {rel!r} to be a directory, but it is not")
            path = f"{self.root}/{rel}"
            os.mkdir(path)
            os.chmod(path, 0o755)
            self.kinds[rel] = "d"
            self.inodes += 1

    def _remove(self, rel: str, kind: str) -> None:
        """Remove an earlier entry that a later one replaces, keeping the counts right."""
        path = f"{self.root}/{rel}"
        if kind != "d":
            st = os.lstat(path)
            if st.st_nlink == 1:
                self.inodes -= 1
                if stat.S_ISREG(st.st_mode):
                    self.size -= st.st_size
            os.unlink(path)
            del self.kinds[rel]
            return
        inodes, size = _tree_usage(path)
        self.inodes -= inodes
        self.size -= size
        shutil.rmtree(path)
        prefix = rel + "/"
        for key in [k for k in self.kinds if k == rel or k.startswith(prefix)]:
            del self.kinds[key]
        for key in [k for k in self.dir_mtimes if k == rel or k.startswith(prefix)]:
            del self.dir_mtimes[key]

    def finish(self) -> None:
        """Set directory mtimes, now that nothing more is created inside them."""
        for rel, ns in self.dir_mtimes.items():
            os.utime(self._path(rel), ns=(ns, ns), follow_symlinks=False)


def _tree_usage(top: str) -> tuple[int, int]:
    """(inodes, content bytes) that removing the tree ``top`` frees."""
    inodes = size = 0
    shared: dict[tuple[int, int], list[int]] = {}  # inode -> [links seen, nlink, size]
    stack = [top]
    while stack:
        inodes += 1
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                bytes_ = st.st_size if stat.S_ISREG(st.st_mode) else 0
                if st.st_nlink == 1:
                    inodes += 1
                    size += bytes_
                else:
                    shared.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, bytes_])[0] += 1
    for seen, nlink, bytes_ in shared.values():
        if seen == nlink:
            inodes += 1
            size += bytes_
    return inodes, size
