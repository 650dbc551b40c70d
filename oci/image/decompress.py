"""Streaming decompression of a layer blob: gzip with zlib, zstd by running ``zstd -dc``.

``open_source`` gives a ``Source`` of decompressed chunks; ``Prefetch`` reads it
ahead on a helper thread and hashes what it reads (the layer's diff_id).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import subprocess
import threading
import zlib
from typing import BinaryIO, Protocol

from base.errors import DataLoss, Internal

_CHUNK = 1 << 20  # bytes of decompressed data handed over at a time


class Source(Protocol):
    def read_chunk(self) -> bytes:
        """The next piece of decompressed data; b"" once the stream is complete."""
        ...

    def close(self) -> None: ...


class _PlainSource:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read_chunk(self) -> bytes:
        return self._f.read(_CHUNK)

    def close(self) -> None:
        pass


class _GzipSource:
    """gzip (possibly several concatenated members) through zlib, bounded output per call."""

    def __init__(self, f: BinaryIO, what: str) -> None:
        self._f = f
        self._what = what
        self._z = zlib.decompressobj(31)
        self._pending = b""
        self._done = False

    def read_chunk(self) -> bytes:
        try:
            while True:
                if self._pending:
                    out, self._pending = self._pending, b""
                    return out
                if self._done:
                    return b""
                if self._z.eof:
                    self._next_member()
                    continue
                data = self._z.unconsumed_tail or self._f.read(_CHUNK)
                if not data:
                    raise DataLoss(
                        f"layer {self._what} is truncated: the gzip stream ends early",
                        reason="INVALID_LAYER",
                    )
                out = self._z.decompress(data, _CHUNK)
                if out:
                    return out
        except zlib.error as exc:
            raise DataLoss(
                f"layer {self._what} is not valid gzip: {exc}", reason="INVALID_LAYER"
            ) from None

    def _next_member(self) -> None:
        tail = self._z.unused_data
        while len(tail) < 2:
            more = self._f.read(_CHUNK)
            if not more:
                break
            tail += more
        if tail[:2] == b"\x1f\x8b":
            self._z = zlib.decompressobj(31)
            self._pending = self._z.decompress(tail, _CHUNK)
            return
        while tail:  # trailing zero padding is tolerated, anything else is not
            if tail.strip(b"\0"):
                raise DataLoss(
                    f"layer {self._what} has data after the end of its gzip stream",
                    reason="INVALID_LAYER",
                )
            tail = self._f.read(_CHUNK)
        self._done = True

    def close(self) -> None:
        pass


class _ZstdSource:
    """zstd through Debian's ``zstd -dc`` reading the blob file directly."""

    def __init__(self, f: BinaryIO, what: str) -> None:
        self._what = what
        try:
            self._proc = subprocess.Popen(
                ["zstd", "-dc", "-q", "--no-progress"],
                stdin=f,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except FileNotFoundError:
            raise Internal(
                "cannot unpack a zstd layer: the zstd program is not installed "
                "(apt-get install zstd)",
                reason="ZSTD_MISSING",
            ) from None
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        with contextlib.suppress(OSError):  # a smaller pipe only costs speed
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _CHUNK)

    def read_chunk(self) -> bytes:
        data = os.read(self._fd, _CHUNK)
        if data:
            return data
        proc = self._proc
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise DataLoss(
                f"layer {self._what} is not valid zstd: {err or f'zstd exited {proc.returncode}'}",
                reason="INVALID_LAYER",
            )
        return b""

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class Prefetch:
    """Decompresses and hashes on a helper thread, so that overlaps with creating files.

    zlib, sha256 and pipe reads release the GIL, so this uses the second core.
    """

    def __init__(self, source: Source) -> None:
        self._source = source
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._hash = hashlib.sha256()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="layer-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._source.read_chunk()
                self._hash.update(chunk)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read_chunk(self) -> bytes:
        if self._eof:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    def hexdigest(self) -> str:
        """The sha256 of everything read; complete once read_chunk returned b""."""
        return self._hash.hexdigest()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._source.close()


def open_source(f: BinaryIO, compression: str, what: str) -> Source:
    if compression == "gzip":
        return _GzipSource(f, what)
    if compression == "zstd":
        return _ZstdSource(f, what)
    return _PlainSource(f)
