"""Image reference parsing and normalisation."""

from __future__ import annotations

import pytest

from base.errors import InvalidArgument
from oci.image.reference import (
    Reference,
    is_digest,
    is_short_name,
    parse,
    parse_digest,
    parse_short,
)

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("docker.io/busybox", ("docker.io", "library/busybox", "latest", None)),
        ("docker.io/library/busybox:1.36", ("docker.io", "library/busybox", "1.36", None)),
        ("index.docker.io/foo/bar", ("docker.io", "foo/bar", "latest", None)),
        ("index.docker.io/alpine", ("docker.io", "library/alpine", "latest", None)),
        ("quay.io/a/b/c:v1", ("quay.io", "a/b/c", "v1", None)),
        ("localhost/app", ("localhost", "app", "latest", None)),
        ("localhost:5000/app:dev", ("localhost:5000", "app", "dev", None)),
        ("registry:5000/app", ("registry:5000", "app", "latest", None)),
        (f"quay.io/a/b@{SHA}", ("quay.io", "a/b", None, SHA)),
        (f"quay.io/a/b:t@{SHA}", ("quay.io", "a/b", "t", SHA)),
        ("10.0.0.1:5000/x_y/z__w.q-r:T_1.2-x", ("10.0.0.1:5000", "x_y/z__w.q-r", "T_1.2-x", None)),
        ("[::1]:5000/app", ("[::1]:5000", "app", "latest", None)),
        ("My-Registry.example.com/app", ("My-Registry.example.com", "app", "latest", None)),
    ],
)
def test_parse_valid(text: str, want: tuple[str, str, str | None, str | None]) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == want


def test_str_name_and_identifier() -> None:
    ref = parse(f"quay.io/a/b:t@{SHA}")
    assert ref.name == "quay.io/a/b"
    assert str(ref) == f"quay.io/a/b:t@{SHA}"
    assert ref.identifier == SHA
    assert parse("quay.io/a/b").identifier == "latest"
    assert str(parse("docker.io/busybox")) == "docker.io/library/busybox:latest"


def test_with_tag_and_digest() -> None:
    ref = parse(f"quay.io/a/b@{SHA}")
    tagged = ref.with_tag("v2")
    assert (tagged.tag, tagged.digest) == ("v2", None)
    pinned = parse("quay.io/a/b:v1").with_digest(SHA)
    assert (pinned.tag, pinned.digest) == (None, SHA)
    with pytest.raises(InvalidArgument):
        ref.with_tag("-bad")
    with pytest.raises(InvalidArgument):
        ref.with_digest("sha256:abc")


def test_no_default_tag_when_asked() -> None:
    assert parse("quay.io/a/b", default_tag=False).tag is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("quay.io/Foo/bar", "lowercase"),
        ("quay.io/foo/bar:", "tag is empty"),
        ("quay.io/foo/bar:-x", "tag"),
        ("quay.io/foo/bar:a+b", "tag"),
        ("quay.io/foo/bar:" + "a" * 129, "129 characters"),
        ("quay.io/foo/bar@md5:" + "a" * 32, "unsupported algorithm"),
        ("quay.io/foo/bar@sha256:" + "a" * 63, "exactly 64"),
        ("quay.io/foo/bar@sha256:" + "A" * 64, "lowercase hex"),
        ("quay.io/foo/bar@", "digest"),
        ("quay.io//bar", "empty path component"),
        ("quay.io/foo/", "empty path component"),
        ("quay.io/foo--", "path component"),
        ("quay.io/foo..bar", "path component"),
        ("busybox", "not fully qualified"),
        ("library/busybox:1", "not fully qualified"),
        ("-bad.io/x", "host"),
        (" quay.io/x", "whitespace"),
        ("quay.io/" + "a" * 260, "255"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    assert fragment in info.value.message
    if text.strip():
        assert repr(text) in info.value.message


def test_tag_of_128_chars_is_fine() -> None:
    assert parse("quay.io/a:" + "x" * 128).tag == "x" * 128


def test_sha512_digest_accepted() -> None:
    digest = "sha512:" + "b" * 128
    assert parse(f"quay.io/a@{digest}").digest == digest
    assert parse_digest(digest) == ("sha512", "b" * 128)
    assert is_digest(SHA)
    assert not is_digest("sha512:" + "b" * 64)


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("busybox", True),
        ("busybox:1", True),
        ("library/busybox", True),
        (f"app@{SHA}", True),
        ("quay.io/a", False),
        ("localhost/a", False),
        ("host:5000/a", False),
    ],
)
def test_is_short_name(text: str, short: bool) -> None:
    assert is_short_name(text) is short


def test_parse_short() -> None:
    assert parse_short("busybox").path == "busybox"
    s = parse_short(f"team/app:1@{SHA}")
    assert (s.path, s.tag, s.digest) == ("team/app", "1", SHA)
    assert s.qualify("quay.io") == Reference("quay.io", "team/app", "1", SHA)
    assert str(parse_short("busybox").qualify("docker.io")) == "docker.io/library/busybox:latest"
    with pytest.raises(InvalidArgument, match="lowercase"):
        parse_short("BusyBox")
    with pytest.raises(InvalidArgument, match="not a short name"):
        parse_short("quay.io/a")


@pytest.mark.parametrize("text", ["a" * 64, "sha256:" + "a" * 64])
def test_an_image_id_is_not_a_short_name_to_pull(text: str) -> None:
    """Docker refuses 64-hex names; pulling an ID must not ask docker.io for library/<hex>."""
    with pytest.raises(InvalidArgument, match="image ID"):
        parse_short(text)
    assert parse_short("a" * 63).path == "a" * 63
    assert parse_short("sha256:v1").tag == "v1"
