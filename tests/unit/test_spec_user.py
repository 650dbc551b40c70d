"""User resolution against the image's /etc/passwd and /etc/group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from base.errors import InvalidArgument
from oci.spec.inputs import SecurityContext, SupplementalGroupsPolicy
from oci.spec.user import (
    GroupEntry,
    PasswdEntry,
    parse_group,
    parse_passwd,
    read_in_root,
    resolve_in_root,
    resolve_user,
    resolve_user_in_rootfs,
)

PASSWD = parse_passwd(
    "root:x:0:0:root:/root:/bin/sh\n"
    "# comment\n"
    "broken line\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    "bob:x:1001:100::/home/bob:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUPS = parse_group(
    "root:x:0:\nusers:x:100:alice\nstaff:x:50:alice,bob\nalice:x:1000:\nbad:x:nan:\n"
)


def user(image_user: str = "", **kw: object) -> tuple[int, int, tuple[int, ...], str]:
    r = resolve_user(SecurityContext(**kw), image_user, PASSWD, GROUPS)  # type: ignore[arg-type]
    return r.uid, r.gid, r.additional_gids, r.home


def test_parsers_skip_malformed_lines() -> None:
    assert PASSWD[1] == PasswdEntry("alice", 1000, 1000, "/home/alice")
    assert len(PASSWD) == 4
    assert GroupEntry("staff", 50, ("alice", "bob")) in GROUPS
    assert [g.name for g in GROUPS] == ["root", "users", "staff", "alice"]


class TestImageUser:
    def test_empty_is_root(self) -> None:
        assert user("") == (0, 0, (0,), "/root")

    def test_name_takes_passwd_gid_and_member_groups(self) -> None:
        assert user("alice") == (1000, 1000, (1000, 100, 50), "/home/alice")

    def test_uid_known(self) -> None:
        assert user("1001") == (1001, 100, (100, 50), "/home/bob")

    def test_uid_unknown_gets_gid_0_and_home_root(self) -> None:
        assert user("4242") == (4242, 0, (0,), "/")

    def test_uid_gid(self) -> None:
        assert user("4242:4343") == (4242, 4343, (4343,), "/")

    def test_name_group(self) -> None:
        assert user("alice:staff") == (1000, 50, (50, 100), "/home/alice")

    def test_unknown_name_or_group(self) -> None:
        with pytest.raises(InvalidArgument, match="'mallory' is not in the image's /etc/passwd"):
            user("mallory")
        with pytest.raises(InvalidArgument, match="group 'wheel'"):
            user("alice:wheel")


class TestRequestUser:
    def test_run_as_user_overrides_image_user(self) -> None:
        assert user("alice:staff", run_as_user=1001) == (1001, 100, (100, 50), "/home/bob")

    def test_run_as_user_and_group(self) -> None:
        got = user("", run_as_user=1001, run_as_group=1002)
        assert got == (1001, 1002, (1002, 50), "/home/bob")

    def test_run_as_username(self) -> None:
        assert user("", run_as_username="nobody") == (65534, 65534, (65534,), "/nonexistent")

    def test_run_as_username_missing(self) -> None:
        with pytest.raises(InvalidArgument, match="'ghost'"):
            user("", run_as_username="ghost")

    def test_run_as_group_alone_is_an_error(self) -> None:
        with pytest.raises(InvalidArgument, match="run_as_group is set without run_as_user"):
            user("alice", run_as_group=5)

    def test_both_user_forms_is_an_error(self) -> None:
        with pytest.raises(InvalidArgument, match="only one"):
            user("", run_as_user=1, run_as_username="alice")

    def test_negative_uid_rejected(self) -> None:
        with pytest.raises(InvalidArgument, match="out of range"):
            user("", run_as_user=-1)

    def test_supplemental_groups_merged_without_duplicates(self) -> None:
        got = user("alice", supplemental_groups=(1234, 50, 5678))
        assert got[2] == (1000, 100, 50, 1234, 5678)

    def test_strict_policy_ignores_image_groups(self) -> None:
        got = user(
            "alice",
            supplemental_groups=(1234,),
            supplemental_groups_policy=SupplementalGroupsPolicy.STRICT,
        )
        assert got[2] == (1000, 1234)


class TestRootfsFiles:
    def test_symlinks_resolve_inside_root(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        outside = tmp_path / "host-passwd"
        outside.write_text("evil:x:0:0::/:/bin/sh\n")
        # An absolute link and a climbing relative link must both stay in root.
        (root / "etc" / "passwd").symlink_to(str(outside))
        (root / "etc" / "group").symlink_to("../../../../host-passwd")
        assert resolve_in_root(str(root), "/etc/passwd") == str(root / outside.relative_to("/"))
        assert read_in_root(str(root), "/etc/passwd") is None
        assert resolve_in_root(str(root), "/etc/group") == str(root / "host-passwd")
        assert read_in_root(str(root), "/etc/group") is None

    def test_link_inside_root_followed(self, tmp_path: Path) -> None:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "passwd").write_text("carol:x:7:8::/c:/bin/sh\n")
        (tmp_path / "etc").symlink_to("/data")
        assert read_in_root(str(tmp_path), "/etc/passwd") == "carol:x:7:8::/c:/bin/sh\n"
        r = resolve_user_in_rootfs(SecurityContext(), "carol", str(tmp_path))
        assert (r.uid, r.gid, r.home) == (7, 8, "/c")

    def test_link_loop_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "a").symlink_to("b")
        (tmp_path / "b").symlink_to("a")
        with pytest.raises(OSError):
            resolve_in_root(str(tmp_path), "/a/passwd")

    def test_missing_files_mean_numeric_ids_only(self, tmp_path: Path) -> None:
        assert read_in_root(str(tmp_path), "/etc/passwd") is None
        r = resolve_user_in_rootfs(SecurityContext(run_as_user=33), "", str(tmp_path))
        assert (r.uid, r.gid, r.additional_gids) == (33, 0, (0,))
        with pytest.raises(InvalidArgument):
            resolve_user_in_rootfs(SecurityContext(run_as_username="alice"), "", str(tmp_path))

    def test_non_regular_file_ignored(self, tmp_path: Path) -> None:
        (tmp_path / "etc").mkdir()
        os.mkfifo(tmp_path / "etc" / "passwd")
        assert read_in_root(str(tmp_path), "/etc/passwd") is None
