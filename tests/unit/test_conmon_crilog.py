"""CRI log lines as conmon writes them."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from base.errors import DataLoss
from conmon.crilog import (
    LogLine,
    parse_line,
    parse_lines,
    parse_timestamp,
    read_log,
    reassemble,
    split_streams,
)

BASE = calendar.timegm((2026, 8, 21, 15, 9, 13, 0, 0, 0)) * 10**9


def test_parse_full_line() -> None:
    ln = parse_line(b"2026-08-21T15:09:13.123456789+00:00 stdout F hello world\n")
    assert ln == LogLine(BASE + 123456789, "stdout", False, b"hello world",
                         "2026-08-21T15:09:13.123456789+00:00")  # fmt: skip


def test_parse_partial_and_offsets() -> None:
    ln = parse_line(b"2026-08-21T17:09:13.000000001+02:00 stderr P abc")
    assert (ln.timestamp_ns, ln.stream, ln.partial, ln.content) == (
        BASE + 1,
        "stderr",
        True,
        b"abc",
    )
    assert parse_timestamp("2026-08-21T10:39:13.5-04:30") == BASE + 500_000_000
    assert parse_timestamp("2026-08-21T15:09:13Z") == BASE
    with pytest.raises(DataLoss):
        parse_timestamp("2026-08-21T15:09:13Z\n")


def test_content_is_kept_byte_exact() -> None:
    ln = parse_line(b"2026-08-21T15:09:13Z stdout F  two  spaces \r\xff\n")
    assert ln.content == b" two  spaces \r\xff"
    assert parse_line(b"2026-08-21T15:09:13Z stdout F \n").content == b""


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"garbage",
        b"2026-08-21T15:09:13Z stdin F x",
        b"2026-08-21T15:09:13Z stdout X x",
        b"2026-08-21 15:09:13Z stdout F x",
        b"2026-08-21T15:09:13 stdout F x",
        b"2026-08-21T15:09:13.1234567890Z stdout F x",
    ],
)
def test_malformed_lines(bad: bytes) -> None:
    with pytest.raises(DataLoss):
        parse_line(bad)


def test_parse_lines_skips_bad_and_unfinished() -> None:
    data = (
        b"2026-08-21T15:09:13Z stdout F a\n"
        b"junk\n"
        b"2026-08-21T15:09:13Z stdout F b\n"
        b"2026-08-21T15:09:13Z stdout F still being writ"
    )
    assert [ln.content for ln in parse_lines(data)] == [b"a", b"b"]
    with pytest.raises(DataLoss):
        parse_lines(data, strict=True)


def _l(stream: str, partial: bool, content: bytes) -> LogLine:
    return LogLine(0, stream, partial, content)


def test_reassemble_joins_partials_per_stream() -> None:
    lines = [
        _l("stdout", True, b"aa"),
        _l("stderr", True, b"E1"),
        _l("stdout", True, b"bb"),
        _l("stderr", False, b"E2"),
        _l("stdout", False, b"cc"),
        _l("stdout", False, b""),
        _l("stdout", True, b"tail"),
    ]
    assert reassemble(lines) == [
        ("stderr", b"E1E2\n"),
        ("stdout", b"aabbcc\n"),
        ("stdout", b"\n"),
        ("stdout", b"tail"),
    ]


def test_split_streams_caps_each_stream() -> None:
    lines = [_l("stdout", False, b"12345"), _l("stderr", True, b"ab"), _l("stdout", True, b"678")]
    assert split_streams(lines, 100) == (b"12345\n678", b"ab", False)
    assert split_streams(lines, 4) == (b"1234", b"ab", True)


def test_read_log(tmp_path: Path) -> None:
    p = tmp_path / "0.log"
    p.write_bytes(b"2026-08-21T15:09:13Z stdout P x\n2026-08-21T15:09:13Z stdout F y\n")
    assert reassemble(read_log(str(p))) == [("stdout", b"xy\n")]
