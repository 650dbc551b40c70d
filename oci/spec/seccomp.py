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
from collections.abc import Collection
from typing import Any

from base.errors import Internal, InvalidArgument
from oci.spec.capabilities import normalize
from oci.spec.inputs import DaemonFacts, SeccompProfile, SeccompProfileType

PACKAGED_DEFAULT = os.path.join(os.path.dirname(__file__), "seccomp_default.json")

ACTIONS = frozenset(
    {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
     "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"}
)
_RULE_KEYS = ("errnoRet", "args")
_cache: dict[str, tuple[float, dict[str, Any]]] = {}

Spec = dict[str, Any]


def read_profile(path: str) -> dict[str, Any]:
    """Load and check a profile file; problems raise InvalidArgument naming the path."""
    try:
        mtime = os.stat(path).st_mtime
        cached = _cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp profile {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"seccomp profile {path!r} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"seccomp profile {path!r} is not valid JSON: {exc}") from None
    check_profile(raw, path)
    _cache[path] = (mtime, raw)
    return raw


def check_profile(raw: object, source: str) -> None:
    """Raise InvalidArgument unless ``raw`` has the shape of a seccomp profile."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"seccomp profile {source!r} must be a JSON object")
    if raw.get("defaultAction") not in ACTIONS:
        raise InvalidArgument(
            f"seccomp profile {source!r}: defaultAction must be one of {sorted(ACTIONS)}"
        )
    rules = raw.get("syscalls", [])
    if not isinstance(rules, list):
        raise InvalidArgument(f"seccomp profile {source!r}: syscalls must be a list")
    for index, rule in enumerate(rules):
        names = rule.get("names") if isinstance(rule, dict) else None
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
            or rule.get("action") not in ACTIONS
        ):
            raise InvalidArgument(
                f"seccomp profile {source!r}: syscalls[{index}] needs a list of names "
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
    path = profile.localhost_ref
    if not path.startswith("/"):
        raise InvalidArgument(
            f"Localhost seccomp profile {path!r} must be an absolute path on the node"
        )
    return resolve_profile(read_profile(path), caps, daemon.machine)


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
        f"seccomp profile {value!r} is not supported: use runtime/default, unconfined "
        "or localhost/<absolute path>"
    )
