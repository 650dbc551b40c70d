"""image_sub_path of an image volume: checked as text, then resolved inside the image."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from base.errors import InvalidArgument
from oci.container.image_volumes import check_sub_path, resolve_sub_path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An unpacked image: /etc/passwd, /usr/share/data, and links of every kind."""
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "usr" / "share" / "data").mkdir(parents=True)
    links = {
        "data": "usr/share/data",  # relative, inside
        "abs": "/usr/share/data",  # absolute: the image's root, not the host's
        "etc/up": "../usr/share",  # climbs, but stays inside
        "out": "../../..",  # climbs out of the image
        "etc/out": "../../x",  # climbs out from below
        "loop": "loop",
        "dangling": "nowhere",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    return root


@pytest.mark.parametrize(
    ("sub_path", "expected"),
    [
        ("", ""),
        ("etc", "etc"),
        ("etc/passwd", "etc/passwd"),
        ("./etc/./", "etc"),
        ("data", "usr/share/data"),
        ("abs", "usr/share/data"),
        ("etc/up/data", "usr/share/data"),
    ],
)
def test_resolved_inside_the_image(image: Path, sub_path: str, expected: str) -> None:
    assert resolve_sub_path(str(image), sub_path, "/v", "img") == str(image / expected).rstrip("/")


@pytest.mark.parametrize(
    ("sub_path", "words"),
    [
        ("/etc", "relative to the image's root"),
        ("..", "without '..'"),
        ("etc/../..", "without '..'"),
        ("out", "leads outside the image through a symbolic link"),
        ("etc/out", "leads outside the image"),
        ("loop", "too many levels of symbolic links"),
        ("dangling", "does not exist in image 'img'"),
        ("etc/missing", "does not exist in image 'img'"),
        ("etc/passwd/x", "passwd is not a directory"),
        ("a\x00b", "control character"),
    ],
)
def test_refused_with_the_reason(image: Path, sub_path: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(words)) as err:
        resolve_sub_path(str(image), sub_path, "/v", "img")
    assert "image volume /v" in err.value.message


def test_check_sub_path_alone_reads_nothing() -> None:
    assert check_sub_path("a/b", "/v") == "a/b"
    assert check_sub_path("", "/v") == ""
    with pytest.raises(InvalidArgument, match=re.escape("without '..'")):
        check_sub_path("a/..", "/v")
