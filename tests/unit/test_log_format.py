"""The text log format: key=value, values bare when they are plain, else JSON strings."""

from __future__ import annotations

import logging

import pytest

from cri.logs import _quote, _TextFormatter


@pytest.mark.parametrize("value, text", [
    ("b8e8b4deba35d29e6bc7abc35d2ae17ea2787147b6e044e02c09d8a9f4af42c9",
     "b8e8b4deba35d29e6bc7abc35d2ae17ea2787147b6e044e02c09d8a9f4af42c9"),
    ("/var/lib/peapod/a_b-c.json", "/var/lib/peapod/a_b-c.json"),
    ("10.0.0.5:80,user@host+x", "10.0.0.5:80,user@host+x"),
    ("élan", "élan"),  # letters of any script are bare
    (34.5, "34.5"),
    ("", '""'),
    ("a b", '"a b"'),
    ("k=v", '"k=v"'),
    ("line\nbreak", '"line\\nbreak"'),
    (["10.0.0.5"], '"[\'10.0.0.5\']"'),
    (None, "None"),
])  # fmt: skip
def test_values_are_bare_only_when_plain(value: object, text: str) -> None:
    assert _quote(value) == text


def test_a_record_is_one_line_of_key_values() -> None:
    record = logging.LogRecord("peapod.x", logging.INFO, "", 0, "container started", None, None)
    record.container = "c" * 64
    record.error = "no such file"
    line = _TextFormatter().format(record)
    assert line.startswith("time=") and "\n" not in line
    assert line.endswith(f'level=info logger=peapod.x msg="container started" '
                         f'container={"c" * 64} error="no such file"')
