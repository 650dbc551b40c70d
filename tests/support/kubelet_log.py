"""The CRI errors a kubelet logged, and the expected-failure list they are checked against.

The kubelet's CRI client (k8s.io/cri-client, ``remote_runtime.go`` / ``remote_image.go``)
logs every failed call at error level as ``"<Rpc> from runtime service failed"
err="rpc error: code = <Code> desc = <message>"``; the callers above it often log the
same error again (pod workers, the eviction manager). ``cri_errors`` collects every
error or warning line that comes from the CRI client or carries a gRPC status, in klog's
text format::

    E1205 13:20:52.374529   23326 remote_runtime.go:498] "CreateContainer in ..." err="..."

``tests/expected-failures.yaml`` (section ``kubelet:``) lists the errors that name a
feature peapod lacks, each ``{match: <regex on the line>, feature: ..., issue: N}``.
``check`` returns the lines no entry (nor anything the test provoked) explains, and the
entries that matched nothing: the list may only shrink, so both fail a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

EXPECTED_FAILURES = Path(__file__).resolve().parents[1] / "expected-failures.yaml"
_HEADER = re.compile(
    r"^(?P<level>[EW])(?P<month>\d\d)(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d\.\d+)\s+\d+ "
    r"(?P<source>[\w.-]+):\d+\] (?P<rest>.*)$")
_STATUS = re.compile(r"rpc error: code = (?P<code>\w+) desc = ")
_CRI_CLIENT = ("remote_runtime.go", "remote_image.go")


@dataclass(frozen=True)
class CriError:
    """One logged line: when, where in the kubelet, the gRPC code (if any) and the text."""

    at: datetime
    source: str
    code: str
    line: str


@dataclass(frozen=True)
class Expected:
    """An error the run may (and must) show: a regex on the logged line and its reason."""

    match: str
    feature: str
    issue: int | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.match))

    def matches(self, error: CriError) -> bool:
        return self.pattern.search(error.line) is not None

    def __str__(self) -> str:
        issue = f" (issue {self.issue})" if self.issue is not None else ""
        return f"{self.feature}{issue}: /{self.match}/"


@dataclass(frozen=True)
class Window:
    """Errors matching ``match`` logged between ``start`` and ``end`` are explained (e.g.
    the runtime was restarted on purpose: the kubelet meets a closed socket)."""

    start: datetime
    end: datetime
    match: str
    reason: str

    def covers(self, error: CriError) -> bool:
        return self.start <= error.at <= self.end and re.search(self.match, error.line) is not None


def cri_errors(text: str, year: int | None = None) -> list[CriError]:
    """The CRI-related error and warning lines of a kubelet log (klog text format)."""
    year = year or datetime.now().year
    found = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m is None:
            continue
        status = _STATUS.search(line)
        if status is None and not (m["level"] == "E" and m["source"] in _CRI_CLIENT):
            continue
        at = datetime.strptime(f"{year}{m['month']}{m['day']} {m['time']}",
                               "%Y%m%d %H:%M:%S.%f").astimezone()  # klog writes local time
        found.append(CriError(at, m["source"], status["code"] if status else "", line))
    return found


_REMOVED = re.compile(r'^time=(?P<at>\S+) .*msg="container removed" container=(?P<id>[0-9a-f]+)')
_NOT_FOUND = re.compile(r"code = NotFound desc = container (?P<id>[0-9a-f]{64}) not found")


def removed_containers(peapod_log: str) -> dict[str, datetime]:
    """When peapod removed each container, from its log (text format)."""
    out = {}
    for line in peapod_log.splitlines():
        m = _REMOVED.match(line)
        if m:
            out[m["id"]] = datetime.fromisoformat(m["at"].replace("Z", "+00:00"))
    return out


@dataclass(frozen=True)
class AlreadyRemoved:
    """NotFound for a container peapod had removed before the error (on the kubelet's own
    RemoveContainer: its container deletor, GC and status readers race one another, and
    NotFound is then the answer the CRI asks for)."""

    removed: dict[str, datetime]
    slack: timedelta = timedelta(milliseconds=50)  # the two logs' clocks and rounding

    def covers(self, error: CriError) -> bool:
        m = _NOT_FOUND.search(error.line)
        at = self.removed.get(m["id"]) if m else None
        return at is not None and at <= error.at + self.slack


def load_expected(path: Path = EXPECTED_FAILURES, section: str = "kubelet") -> list[Expected]:
    """The ``section`` entries of the expected-failure file."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    entries = doc.get(section)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: no '{section}:' list")
    out = []
    for entry in entries:
        unknown = set(entry) - {"match", "feature", "issue"}
        if unknown or "match" not in entry or "feature" not in entry:
            raise ValueError(f"{path}: {section} entry {entry!r} wants match, feature, issue")
        out.append(Expected(str(entry["match"]), str(entry["feature"]), entry.get("issue")))
    return out


_MESSAGE = re.compile(r'\] "(?P<msg>[^"]*)"')


def tally(errors: Iterable[CriError]) -> dict[str, int]:
    """How many lines of each kind: "<source>: <message> (<code>)"."""
    counts: dict[str, int] = {}
    for e in errors:
        m = _MESSAGE.search(e.line)
        key = f"{e.source}: {m['msg'] if m else '?'} ({e.code or 'no status'})"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class Verdict:
    """``unexplained`` lines, and ``absent`` entries that explained nothing."""

    unexplained: list[CriError]
    absent: list[Expected]

    def report(self, limit: int = 20) -> str:
        lines = []
        if self.unexplained:
            lines.append(f"{len(self.unexplained)} CRI errors not on the expected-failure list:")
            lines += [f"  {e.line[:600]}" for e in self.unexplained[:limit]]
        if self.absent:
            lines.append("expected failures that no longer appear (remove them from "
                         "tests/expected-failures.yaml; the list may only shrink):")
            lines += [f"  {e}" for e in self.absent]
        return "\n".join(lines)


def check(errors: Iterable[CriError], expected: list[Expected], provoked: list[Expected],
          excuses: list[Window | AlreadyRemoved]) -> Verdict:
    """Match every error against the list, what the test provoked and the excuses."""
    seen: set[int] = set()
    unexplained = []
    entries = [*expected, *provoked]
    for error in errors:
        hits = [i for i, entry in enumerate(entries) if entry.matches(error)]
        seen.update(hits)
        if not hits and not any(x.covers(error) for x in excuses):
            unexplained.append(error)
    return Verdict(unexplained, [e for i, e in enumerate(entries) if i not in seen])
