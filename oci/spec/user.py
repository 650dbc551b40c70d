"""Resolve the container's user (uid, gid, groups, home) from the request and image.

Names are looked up in the image's /etc/passwd and /etc/group. Those files are read
under the rootfs with every symlink resolved as if the rootfs were "/", so an image
cannot make peapod read a file of the host.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from base.errors import InvalidArgument
from oci.spec.inputs import SecurityContext, SupplementalGroupsPolicy

_MAX_LINKS = 40
_MAX_FILE_BYTES = 4 << 20


@dataclass(frozen=True)
class PasswdEntry:
    """One line of /etc/passwd."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    """One line of /etc/group."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedUser:
    """The identity the container process runs with."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str


def resolve_in_root(root: str, path: str) -> str:
    """Host path of ``path`` inside ``root``, following symlinks as if chrooted.

    Absolute link targets restart at ``root`` and ".." never climbs above it. The last
    component may be missing; it is returned unresolved.
    """
    pending = [part for part in path.split("/") if part]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            done.append(part)
            done.extend(pending)
            break
        if not stat.S_ISLNK(mode):
            done.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many symbolic links", os.path.join(root, path))
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        pending = [p for p in target.split("/") if p] + pending
    return os.path.join(root, *done)


def read_in_root(root: str, path: str) -> str | None:
    """Text of the regular file ``path`` inside ``root``, or None if it does not exist."""
    host_path = resolve_in_root(root, path)
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(_MAX_FILE_BYTES).decode("utf-8", errors="replace")


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of an /etc/passwd file; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith("#"):
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        home = fields[5] if len(fields) > 5 else ""
        entries.append(PasswdEntry(fields[0], uid, gid, home))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of an /etc/group file; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or line.startswith("#"):
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _parse_id(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _find_user(passwd: list[PasswdEntry], name: str) -> PasswdEntry:
    for entry in passwd:
        if entry.name == name:
            return entry
    raise InvalidArgument(f"user {name!r} is not in the image's /etc/passwd")


def _by_uid(passwd: list[PasswdEntry], uid: int) -> PasswdEntry | None:
    return next((entry for entry in passwd if entry.uid == uid), None)


def _find_group(groups: list[GroupEntry], name: str) -> int:
    for entry in groups:
        if entry.name == name:
            return entry.gid
    raise InvalidArgument(f"group {name!r} is not in the image's /etc/group")


def _check_id(value: int, what: str) -> int:
    if not 0 <= value < 2**32 - 1:
        raise InvalidArgument(f"{what} {value} is out of range (0 to 4294967294)")
    return value


def resolve_user(
    security: SecurityContext,
    image_user: str,
    passwd: list[PasswdEntry],
    groups: list[GroupEntry],
) -> ResolvedUser:
    """The uid, gid, additional gids and home of the container process.

    run_as_user / run_as_username take precedence over the image's User (forms "name",
    "uid", "uid:gid", "name:group"); run_as_group overrides the gid and requires one of
    them. The gid defaults to the user's primary group in /etc/passwd, else 0.
    """
    if security.run_as_group is not None and (
        security.run_as_user is None and not security.run_as_username
    ):
        raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    if security.run_as_user is not None and security.run_as_username:
        raise InvalidArgument("set only one of run_as_user and run_as_username, not both")

    entry: PasswdEntry | None
    if security.run_as_username:
        entry = _find_user(passwd, security.run_as_username)
        uid, gid = entry.uid, entry.gid
    elif security.run_as_user is not None:
        uid = _check_id(security.run_as_user, "run_as_user")
        entry = _by_uid(passwd, uid)
        gid = entry.gid if entry else 0
    else:
        user_part, _, group_part = image_user.partition(":")
        numeric_uid = _parse_id(user_part) if user_part else 0
        if numeric_uid is None:
            entry = _find_user(passwd, user_part)
            uid = entry.uid
        else:
            uid = numeric_uid
            entry = _by_uid(passwd, uid)
        gid = entry.gid if entry else 0
        if group_part:
            numeric_gid = _parse_id(group_part)
            gid = numeric_gid if numeric_gid is not None else _find_group(groups, group_part)
    if security.run_as_group is not None:
        gid = _check_id(security.run_as_group, "run_as_group")

    gids: list[int] = [gid]
    if security.supplemental_groups_policy is SupplementalGroupsPolicy.MERGE and entry:
        gids += [group.gid for group in groups if entry.name in group.members]
    gids += [_check_id(g, "supplemental group") for g in security.supplemental_groups]
    additional = tuple(dict.fromkeys(gids))
    return ResolvedUser(uid, gid, additional, entry.home if entry and entry.home else "/")


def resolve_user_in_rootfs(security: SecurityContext, image_user: str, rootfs: str) -> ResolvedUser:
    """resolve_user with /etc/passwd and /etc/group read from the image's rootfs."""
    passwd = parse_passwd(read_in_root(rootfs, "/etc/passwd") or "")
    groups = parse_group(read_in_root(rootfs, "/etc/group") or "")
    return resolve_user(security, image_user, passwd, groups)


def process_user(user: ResolvedUser) -> dict[str, object]:
    """The OCI ``process.user`` object."""
    return {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)}
