"""CNI spec version numbers: parsing, comparison and selection."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Spec versions peapod can drive, oldest first.
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0",
)
LATEST_VERSION = SUPPORTED_VERSIONS[-1]

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_version(text: str) -> tuple[int, int, int]:
    """Split "major.minor.patch" into integers; ValueError if malformed."""
    match = _VERSION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version of the form major.minor.patch")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def at_least(version: str, minimum: str) -> bool:
    """True if ``version`` is ``minimum`` or newer (malformed versions are never)."""
    try:
        return parse_version(version) >= parse_version(minimum)
    except ValueError:
        return False


def is_supported(version: str) -> bool:
    """True if peapod can drive plugins at this spec version."""
    return version in SUPPORTED_VERSIONS


def select_version(cni_version: str, cni_versions: Iterable[str] = ()) -> str:
    """The highest supported version among ``cniVersion`` and ``cniVersions``.

    Raises ValueError naming the versions offered when none is supported.
    """
    offered = [cni_version, *cni_versions]
    usable = [v for v in offered if is_supported(v)]
    if not usable:
        raise ValueError(
            f"unsupported cniVersion {', '.join(repr(v) for v in offered)} "
            f"(peapod supports {', '.join(SUPPORTED_VERSIONS)})"
        )
    return max(usable, key=parse_version)
