"""Seccomp filters for containers (``linux.seccomp``).

Profiles are JSON in the OCI ``linux.seccomp`` shape, with three optional extensions
peapod's own default profile (seccomp_default.json) uses and Localhost profiles may too:

* ``architecturesByMachine``: uname machine -> seccomp architectures. A machine not
  listed gets no ``architectures`` entry, so the filter covers only the native one.
* a rule's ``whenCaps``: keep the rule only if the container holds one of these caps;
* a rule's ``unlessCaps``: keep the rule only if it holds none of them.

Rule keys other than names/action/errnoRet/args (e.g. "comment") are dropped.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from base.errors import Internal, InvalidArgument
from base.text import check_path, shorten
from oci.spec.capabilities import normalize
from oci.spec.inputs import DaemonFacts, SeccompProfile, SeccompProfileType

PACKAGED_DEFAULT = os.path.join(os.path.dirname(__file__), "seccomp_default.json")

ACTIONS = frozenset(
    {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
     "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"}
)
_RULE_KEYS = ("errnoRet", "args")
# Profiles are a few tens of KiB; peapod's default is under 20 KiB.
MAX_PROFILE_BYTES = 1 << 20
_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

Spec = dict[str, Any]


def _read_bounded(path: str) -> tuple[tuple[int, int, int], bytes | None]:
    """(identity, content) of a regular file of at most MAX_PROFILE_BYTES.

    Opened non-blocking, so a FIFO cannot hold the caller; anything but a regular
    file (a device, a directory, a FIFO) is refused before a byte is read. The
    content is None when the identity matches the cache.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp profile {shorten(path)} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(
            f"seccomp profile {shorten(path)} cannot be opened: {exc.strerror}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"seccomp profile {shorten(path)} is not a regular file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise InvalidArgument(
                f"seccomp profile {shorten(path)} is {st.st_size} bytes; the limit is "
                f"{MAX_PROFILE_BYTES}"
            )
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _cache.get(path)
        if cached and cached[0] == identity:
            return identity, None
        chunks, left = [], MAX_PROFILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise InvalidArgument(
                f"seccomp profile {shorten(path)} is over {MAX_PROFILE_BYTES} bytes"
            )
        return identity, b"".join(chunks)
    except OSError as exc:
        raise InvalidArgument(
            f"seccomp profile {shorten(path)} cannot be read: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)


def read_profile(path: str) -> dict[str, Any]:
    """Load and check a profile file; problems raise InvalidArgument naming the path."""
    identity, data = _read_bounded(path)
    if data is None:
        return _cache[path][1]
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument(f"seccomp profile {shorten(path)} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"seccomp profile {shorten(path)} is not valid JSON: {exc}") from None
    check_profile(raw, path)
    _cache[path] = (identity, raw)
    return raw


def _read_localhost(path: str) -> dict[str, Any]:
    check_path(path, "Localhost seccomp profile", absolute=False)
    if not path.startswith("/"):
        raise InvalidArgument(
            f"Localhost seccomp profile {shorten(path)} must be an absolute path on the node"
        )
    return read_profile(path)


def load_localhost(profile: SeccompProfile | None) -> SeccompProfile | None:
    """``profile`` with a LOCALHOST file read and checked (InvalidArgument if unusable)."""
    if profile is None or profile.type is not SeccompProfileType.LOCALHOST:
        return profile
    return replace(profile, loaded=_read_localhost(profile.localhost_ref))


def check_profile(raw: object, source: str) -> None:
    """Raise InvalidArgument unless ``raw`` has the shape of a seccomp profile."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"seccomp profile {shorten(source)} must be a JSON object")
    if raw.get("defaultAction") not in ACTIONS:
        raise InvalidArgument(
            f"seccomp profile {shorten(source)}: defaultAction must be one of {sorted(ACTIONS)}"
        )
    rules = raw.get("syscalls", [])
    if not isinstance(rules, list):
        raise InvalidArgument(f"seccomp profile {shorten(source)}: syscalls must be a list")
    for index, rule in enumerate(rules):
        names = rule.get("names") if isinstance(rule, dict) else None
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
            or rule.get("action") not in ACTIONS
        ):
            raise InvalidArgument(
                f"seccomp profile {shorten(source)}: syscalls[{index}] needs a list of names "
                "and a valid action"
            )


def _rule_applies(rule: dict[str, Any], caps: Collection[str]) -> bool:
    when = {normalize(c) for c in rule.get("whenCaps", [])}
    unless = {normalize(c) for c in rule.get("unlessCaps", [])}
    if when and not when & set(caps):
        return False
    return not unless & set(caps)


def resolve_profile(raw: dict[str, Any], caps: Collection[str], machine: str) -> Spec:
    """The OCI ``linux.seccomp`` object for a container holding ``caps``."""
    out: Spec = {"defaultAction": raw["defaultAction"]}
    if "defaultErrnoRet" in raw:
        out["defaultErrnoRet"] = raw["defaultErrnoRet"]
    if "architecturesByMachine" in raw:
        architectures = list(raw["architecturesByMachine"].get(machine, []))
    else:
        architectures = list(raw.get("architectures", []))
    if architectures:
        out["architectures"] = architectures
    if raw.get("flags"):
        out["flags"] = list(raw["flags"])
    syscalls = []
    for rule in raw.get("syscalls", []):
        if not rule["names"] or not _rule_applies(rule, caps):
            continue
        entry: Spec = {"names": list(rule["names"]), "action": rule["action"]}
        entry.update({key: rule[key] for key in _RULE_KEYS if key in rule})
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out


def container_seccomp(
    profile: SeccompProfile | None,
    *,
    privileged: bool,
    caps: Collection[str],
    daemon: DaemonFacts,
) -> Spec | None:
    """The container's filter, or None for none (unconfined, unset, or privileged)."""
    if privileged or profile is None or profile.type is SeccompProfileType.UNCONFINED:
        return None
    if profile.type is SeccompProfileType.RUNTIME_DEFAULT:
        path = daemon.seccomp_profile_path or PACKAGED_DEFAULT
        try:
            raw = read_profile(path)
        except InvalidArgument as exc:
            raise Internal(f"peapod's default seccomp profile is unusable: {exc.message}") from None
        return resolve_profile(raw, caps, daemon.machine)
    raw = profile.loaded
    if raw is None:
        raw = _read_localhost(profile.localhost_ref)
    return resolve_profile(dict(raw), caps, daemon.machine)


def profile_from_legacy_path(value: str) -> SeccompProfile | None:
    """Translate the deprecated ``seccomp_profile_path`` string of the CRI.

    "" and "unconfined" mean no filter; "runtime/default" and "docker/default" the
    runtime's default; "localhost/<absolute path>" a profile file on the node.
    """
    if value in ("", "unconfined"):
        return None
    if value in ("runtime/default", "docker/default"):
        return SeccompProfile(SeccompProfileType.RUNTIME_DEFAULT)
    if value.startswith("localhost/"):
        return SeccompProfile(SeccompProfileType.LOCALHOST, value[len("localhost/") :])
    raise InvalidArgument(
        f"seccomp profile {shorten(value)} is not supported: use runtime/default, unconfined "
        "or localhost/<absolute path>"
    )
