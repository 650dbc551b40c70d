"""Messages on conmon's control FIFO, against a FIFO this test reads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from base.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from conmon.ctl import reopen_log, resize


@pytest.fixture
def fifo(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "ctl"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield str(path), fd
    os.close(fd)


def test_resize_and_reopen_lines(fifo: tuple[str, int]) -> None:
    path, fd = fifo
    resize(path, 33, 101)
    assert os.read(fd, 100) == b"1 33 101\n"
    reopen_log(path)
    assert os.read(fd, 100) == b"2 0 0\n"


@pytest.mark.parametrize(("h", "w"), [(-1, 10), (10, 70000)])
def test_resize_rejects_impossible_sizes(fifo: tuple[str, int], h: int, w: int) -> None:
    with pytest.raises(InvalidArgument):
        resize(fifo[0], h, w)


def test_no_reader_and_no_fifo(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    with pytest.raises(NotFound):
        resize(str(path), 1, 1)
    os.mkfifo(path)
    t0 = time.monotonic()
    with pytest.raises(FailedPrecondition, match="not reading"):
        reopen_log(str(path))
    assert time.monotonic() - t0 < 1  # never blocks


def test_reopen_waits_for_the_new_file(fifo: tuple[str, int], tmp_path: Path) -> None:
    path, fd = fifo
    log = tmp_path / "0.log"
    log.write_text("old\n")
    log.rename(tmp_path / "0.log.1")

    def fake_conmon() -> None:
        while True:
            try:
                if os.read(fd, 100) == b"2 0 0\n":
                    break
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.1)
        log.write_text("")

    t = threading.Thread(target=fake_conmon)
    t.start()
    reopen_log(path, str(log), timeout=5)
    assert log.exists()
    t.join()


def test_reopen_times_out_when_nothing_appears(fifo: tuple[str, int], tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("same file\n")
    with pytest.raises(DeadlineExceeded, match="did not reopen"):
        reopen_log(fifo[0], str(log), timeout=0.2)
