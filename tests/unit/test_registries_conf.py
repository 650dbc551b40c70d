"""registries.conf (v1 and v2) loading, drop-ins, short names, mirrors and blocking."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import InvalidArgument, PermissionDenied
from oci.image.reference import parse
from oci.image.registries_conf import RegistriesConf, Source, load, merge, parse_text

SHA = "sha256:" + "c" * 64


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def conf_from(text: str) -> RegistriesConf:
    return merge([parse_text(text, "test.conf")])


# ---- loading -----------------------------------------------------------------------------------


def test_missing_files_give_defaults(tmp_path: Path) -> None:
    conf = load(tmp_path / "absent.conf", tmp_path / "absent.d")
    assert conf.unqualified_search_registries == ["docker.io"]
    assert conf.registries == []
    assert conf.short_name_mode == "permissive"
    conf = load(None, None, default_search=["quay.io"])
    assert conf.unqualified_search_registries == ["quay.io"]


def test_v2_file(tmp_path: Path) -> None:
    main = write(
        tmp_path / "registries.conf",
        """
unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
insecure = true

[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "mirror-1.local:5000/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
""",
    )
    conf = load(main, tmp_path / "none.d")
    assert conf.unqualified_search_registries == ["quay.io", "docker.io"]
    assert conf.short_name_mode == "enforcing"
    [reg] = conf.registries
    assert (reg.prefix, reg.location, reg.insecure, reg.blocked) == (
        "example.com/foo",
        "internal.example.net/bar",
        True,
        False,
    )
    assert [m.location for m in reg.mirrors] == [
        "mirror-0.local/mirror-for-foo",
        "mirror-1.local:5000/mirrors/foo",
    ]
    assert reg.origin == str(main)

    by_tag = conf.sources(parse("example.com/foo/image:latest"))
    assert by_tag == [
        Source("mirror-0.local", "mirror-for-foo/image", False, True, "latest"),
        Source("internal.example.net", "bar/image", True, False, "latest"),
    ]
    by_digest = conf.sources(parse(f"example.com/foo/image@{SHA}"))
    assert by_digest == [
        Source("mirror-0.local", "mirror-for-foo/image", False, True, SHA),
        Source("mirror-1.local:5000", "mirrors/foo/image", True, True, SHA),
        Source("internal.example.net", "bar/image", True, False, SHA),
    ]


def test_dropins_override_in_lexical_order(tmp_path: Path) -> None:
    main = write(
        tmp_path / "registries.conf",
        """
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "quay.io"
insecure = true
[[registry]]
location = "ghcr.io"
[aliases]
"a" = "quay.io/x/a"
"b" = "quay.io/x/b"
""",
    )
    d = tmp_path / "registries.conf.d"
    write(d / "20-second.conf", 'unqualified-search-registries = ["second.io"]\n')
    write(
        d / "10-first.conf",
        """
unqualified-search-registries = ["first.io"]
short-name-mode = "disabled"
[[registry]]
location = "quay.io"
blocked = true
[aliases]
"a" = ""
"c" = "ghcr.io/y/c"
""",
    )
    write(d / "30-ignored.txt", "this is not toml [[[")
    (d / "40-dir.conf").mkdir()
    conf = load(main, d)
    assert conf.unqualified_search_registries == ["second.io"]
    assert conf.search_origin == str(d / "20-second.conf")
    assert conf.short_name_mode == "disabled"
    quay = conf.find(parse("quay.io/x/y"))
    assert quay is not None and quay.blocked and not quay.insecure
    assert quay.origin == str(d / "10-first.conf")
    assert conf.find(parse("ghcr.io/x/y")) is not None
    assert conf.aliases == {"b": "quay.io/x/b", "c": "ghcr.io/y/c"}


def test_v1_file_is_translated(tmp_path: Path) -> None:
    main = write(
        tmp_path / "registries.conf",
        """
[registries.search]
registries = ['registry1.com', 'registry2.com:5000']

[registries.insecure]
registries = ['registry3.com', 'registry.unsafe.com']

[registries.block]
registries = ['registry.untrusted.com', 'registry.unsafe.com']
""",
    )
    conf = load(main, None)
    assert conf.unqualified_search_registries == ["registry1.com", "registry2.com:5000"]
    flags = {r.prefix: (r.insecure, r.blocked) for r in conf.registries}
    assert flags == {
        "registry3.com": (True, False),
        "registry.unsafe.com": (True, True),
        "registry.untrusted.com": (False, True),
    }
    assert conf.sources(parse("registry3.com/a/b")) == [
        Source("registry3.com", "a/b", True, False, "latest")
    ]
    with pytest.raises(PermissionDenied):
        conf.sources(parse("registry.untrusted.com/a"))


def test_v1_without_search_keeps_default(tmp_path: Path) -> None:
    main = write(tmp_path / "r.conf", "[registries.insecure]\nregistries = ['a.io']\n")
    assert load(main, None).unqualified_search_registries == ["docker.io"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("unqualified-search-registries = [", "not valid TOML"),
        ('unqualified-search-registries = "docker.io"', "unqualified-search-registries"),
        ("unqualified-search-registries = [1]", "list of strings"),
        ('unqualified-search-registries = ["http://x.io"]', "not a registry host"),
        ('short-name-mode = "sometimes"', "short-name-mode"),
        ("[[registry]]\ninsecure = 1\nlocation = 'a.io'", "registry[0].insecure"),
        ("[[registry]]\ninsecure = true", "needs a prefix or a location"),
        ("[[registry]]\nprefix = 'a.io/x'", "location"),
        ("[[registry]]\nlocation = 'https://a.io'", "URL schemes"),
        ("[[registry]]\nprefix = '*.a.io/x'", "wildcard"),
        ("[[registry]]\nlocation = 'a.io'\npull-from-mirror = 'all'", "pull-from-mirror"),
        (
            "[[registry]]\nlocation = 'a.io'\n[[registry.mirror]]\nlocation = 'm.io'\n"
            "pull-from-mirror = 'sometimes'",
            "registry[0].mirror[0].pull-from-mirror",
        ),
        (
            "[[registry]]\nlocation = 'a.io'\nmirror-by-digest-only = true\n"
            "[[registry.mirror]]\nlocation = 'm.io'\npull-from-mirror = 'tag-only'",
            "mirror-by-digest-only",
        ),
        ("[[registry]]\nlocation = 'a.io'\n[[registry.mirror]]\ninsecure = true", "must be set"),
        (
            "[[registry]]\nlocation = 'a.io'\n[[registry]]\nprefix = 'a.io/x'\n"
            "location = 'a.io'\ninsecure = true",
            "conflicting 'insecure'",
        ),
        ("[aliases]\n'quay.io/x' = 'quay.io/x'", "short name"),
        ("[aliases]\n'x:1' = 'quay.io/x'", "tag or digest"),
        ("[aliases]\n'x' = 'x'", "fully qualified"),
        ("[aliases]\n'x' = 'quay.io/x:1'", "tag or digest"),
        ("[aliases]\n'x' = 3", "must be a string"),
        ("unqualified-search-registries = []\n[registries.search]\nregistries = []", "mixes"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "bad.conf", text)
    with pytest.raises(InvalidArgument) as info:
        load(path, None)
    assert str(path) in info.value.message
    assert fragment in info.value.message


def test_v1_dropin_rejected(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "a.conf", "[registries.search]\nregistries = ['x.io']\n")
    with pytest.raises(InvalidArgument, match="v2 format"):
        load(None, d)


def test_duplicate_prefix_in_one_file_first_wins() -> None:
    conf = conf_from(
        "[[registry]]\nprefix = 'a.io/x'\nlocation = 'one.io'\n"
        "[[registry]]\nprefix = 'a.io/x'\nlocation = 'two.io'\n"
    )
    assert conf.sources(parse("a.io/x/y"))[0].endpoint == "one.io"


# ---- short names -----------------------------------------------------------------------------


def test_candidates_fully_qualified_is_itself() -> None:
    conf = conf_from('unqualified-search-registries = ["quay.io"]')
    assert conf.candidates("ghcr.io/a/b:1") == [parse("ghcr.io/a/b:1")]
    assert conf.candidates("docker.io/busybox") == [parse("docker.io/library/busybox:latest")]


def test_candidates_search_list() -> None:
    conf = conf_from('unqualified-search-registries = ["quay.io", "docker.io", "local:5000"]')
    assert [str(r) for r in conf.candidates("busybox:1.36")] == [
        "quay.io/busybox:1.36",
        "docker.io/library/busybox:1.36",
        "local:5000/busybox:1.36",
    ]
    assert [str(r) for r in conf.candidates(f"team/app@{SHA}")] == [
        f"quay.io/team/app@{SHA}",
        f"docker.io/team/app@{SHA}",
        f"local:5000/team/app@{SHA}",
    ]


def test_candidates_alias_wins_and_keeps_tag() -> None:
    conf = conf_from(
        'unqualified-search-registries = ["docker.io"]\n'
        "[aliases]\n'fedora' = 'registry.fedoraproject.org/fedora'\n"
    )
    assert [str(r) for r in conf.candidates("fedora")] == [
        "registry.fedoraproject.org/fedora:latest"
    ]
    assert [str(r) for r in conf.candidates("fedora:39")] == [
        "registry.fedoraproject.org/fedora:39"
    ]
    assert [str(r) for r in conf.candidates(f"fedora@{SHA}")] == [
        f"registry.fedoraproject.org/fedora@{SHA}"
    ]


def test_candidates_empty_search_list() -> None:
    conf = conf_from("unqualified-search-registries = []")
    with pytest.raises(InvalidArgument) as info:
        conf.candidates("busybox")
    msg = info.value.message
    assert "'busybox'" in msg and "no unqualified-search registries" in msg
    assert "fully qualified" in msg and "test.conf" in msg


def test_candidates_invalid_short_name() -> None:
    with pytest.raises(InvalidArgument, match="lowercase"):
        conf_from("").candidates("BusyBox")


# ---- prefixes, rewriting, mirrors, blocking ---------------------------------------------------


def test_no_matching_registry_uses_reference_itself() -> None:
    conf = conf_from("")
    assert conf.sources(parse("docker.io/library/busybox:1")) == [
        Source("registry-1.docker.io", "library/busybox", False, False, "1")
    ]
    assert conf.sources(parse("localhost:5000/app")) == [
        Source("localhost:5000", "app", False, False, "latest")
    ]


def test_longest_prefix_wins() -> None:
    conf = conf_from(
        """
[[registry]]
location = "quay.io"
insecure = true
[[registry]]
prefix = "quay.io/team"
location = "quay.io/team"
blocked = true
[[registry]]
prefix = "quay.io/team/app:ok"
location = "mirror.local/app"
"""
    )
    assert conf.sources(parse("quay.io/other/x"))[0].insecure
    with pytest.raises(PermissionDenied) as info:
        conf.sources(parse("quay.io/team/app:1"))
    assert info.value.reason == "BLOCKED"
    assert "quay.io/team/app:1" in info.value.message and "test.conf" in info.value.message
    # a prefix with a tag matches only that tag and rewrites the whole reference
    assert conf.sources(parse("quay.io/team/app:ok")) == [
        Source("mirror.local", "app", False, False, "latest")
    ]
    # "quay.io/teamwork" must not match the "quay.io/team" prefix
    teamwork = conf.find(parse("quay.io/teamwork/x"))
    assert teamwork is not None and teamwork.prefix == "quay.io"


def test_host_prefix_does_not_match_other_port() -> None:
    conf = conf_from("[[registry]]\nlocation = 'example.com'\nblocked = true\n")
    assert conf.find(parse("example.com:5000/a")) is None
    with pytest.raises(PermissionDenied):
        conf.sources(parse("example.com/a"))


def test_wildcard_prefix() -> None:
    conf = conf_from(
        """
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local"
[[registry]]
prefix = "exact.example.com"
location = "exact.example.com"
"""
    )
    sources = conf.sources(parse("sub.example.com/team/app:1"))
    assert sources == [
        Source("mirror.local", "team/app", False, True, "1"),
        Source("sub.example.com", "team/app", True, False, "1"),
    ]
    assert conf.sources(parse("a.b.example.com:5000/x"))[-1] == Source(
        "a.b.example.com:5000", "x", True, False, "latest"
    )
    assert conf.find(parse("example.com/x")) is None  # the bare domain is not a subdomain
    assert conf.find(parse("notexample.com/x")) is None
    exact = conf.find(parse("exact.example.com/x"))
    assert exact is not None and not exact.wildcard


def test_pull_from_mirror_modes() -> None:
    conf = conf_from(
        """
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "tags.local"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "digests.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "all.local/hub"
"""
    )
    by_tag = [s.endpoint for s in conf.sources(parse("docker.io/library/busybox:1"))]
    assert by_tag == ["tags.local", "all.local", "registry-1.docker.io"]
    by_digest = conf.sources(parse(f"docker.io/library/busybox@{SHA}"))
    assert [s.endpoint for s in by_digest] == ["digests.local", "all.local", "registry-1.docker.io"]
    assert by_digest[1].repository == "hub/library/busybox"
    assert all(s.mirror for s in by_digest[:-1]) and not by_digest[-1].mirror


def test_mirror_by_digest_only() -> None:
    conf = conf_from(
        "[[registry]]\nlocation = 'quay.io'\nmirror-by-digest-only = true\n"
        "[[registry.mirror]]\nlocation = 'm.local'\n"
    )
    assert [s.endpoint for s in conf.sources(parse("quay.io/a:1"))] == ["quay.io"]
    assert [s.endpoint for s in conf.sources(parse(f"quay.io/a@{SHA}"))] == ["m.local", "quay.io"]


def test_docker_hub_endpoint_for_mirror_location() -> None:
    conf = conf_from("[[registry]]\nprefix = 'mirror.corp/hub'\nlocation = 'docker.io'\n")
    assert conf.sources(parse("mirror.corp/hub/library/nginx:1")) == [
        Source("registry-1.docker.io", "library/nginx", False, False, "1")
    ]
