"""Run cri-tools' critest, read its ginkgo JSON report, judge it against the expected list.

``tests/expected-failures.yaml`` names the specs that may fail and why (section
``critest``), and the messages critest may skip a spec with (``critest-skips``).
``judge`` sorts every spec into passed, expected failure or allowed skip, and lists
everything else as a problem: an unexpected failure or skip, an expected failure that
passed (the list may only shrink), an entry that matches no spec, and a feature-skip
entry that no spec was skipped for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXPECTED_FILE = REPO / "tests" / "expected-failures.yaml"
CLIENTS = Path(os.environ.get("PEAPOD_CLIENTS_DIR", REPO / ".cache" / "clients"))
FAILED_STATES = frozenset({"failed", "panicked", "timedout", "interrupted", "aborted"})


def critest_binary() -> Path:
    """The critest deploy/build-clients.sh built."""
    return CLIENTS / "critest"


@dataclass(frozen=True)
class SpecResult:
    """One ginkgo spec (or suite node) as the JSON report gives it."""

    name: str
    state: str
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Report:
    """A parsed ginkgo JSON report."""

    specs: list[SpecResult]
    seed: int
    seconds: float


def parse_report(path: Path) -> Report:
    """Every It spec and every failed suite-level node of a ``-ginkgo.json-report`` file."""
    suites = json.loads(path.read_text())
    specs: list[SpecResult] = []
    seed = 0
    seconds = 0.0
    for suite in suites:
        seed = int(suite.get("SuiteConfig", {}).get("RandomSeed", 0))
        seconds += suite.get("RunTime", 0) / 1e9
        for spec in suite.get("SpecReports") or []:
            kind = spec.get("LeafNodeType", "")
            state = spec.get("State", "")
            if kind != "It" and state not in FAILED_STATES:
                continue
            texts = [*spec.get("ContainerHierarchyTexts", []), spec.get("LeafNodeText", "")]
            name = " ".join(t for t in texts if t) or f"[{kind}]"
            failure = spec.get("Failure") or {}
            specs.append(
                SpecResult(name, state, failure.get("Message", ""), spec.get("RunTime", 0) / 1e9)
            )
    return Report(specs, seed, seconds)


@dataclass(frozen=True)
class ExpectedFailure:
    """An entry of the ``critest`` section."""

    spec: str
    feature: str
    issue: int | None
    reason: str = ""

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this entry's spec (exact text, or /regex/ fully matched)."""
        if len(self.spec) > 2 and self.spec.startswith("/") and self.spec.endswith("/"):
            return re.fullmatch(self.spec[1:-1], name) is not None
        return name == self.spec

    def describe(self) -> str:
        """``feature (issue N)`` or ``feature: reason``."""
        if self.issue:
            return f"{self.feature} (issue {self.issue})"
        return f"{self.feature}: {self.reason}"


@dataclass(frozen=True)
class AllowedSkip:
    """An entry of the ``critest-skips`` section."""

    message: str
    feature: str = ""
    issue: int | None = None
    host: str = ""


def load_expected(path: Path = EXPECTED_FILE) -> tuple[list[ExpectedFailure], list[AllowedSkip]]:
    """The critest sections of the expected-failure file, checked for well-formed entries."""
    doc = yaml.safe_load(path.read_text()) or {}
    failures = []
    for entry in doc.get("critest") or []:
        item = ExpectedFailure(str(entry["spec"]), str(entry["feature"]), entry.get("issue"),
                               str(entry.get("reason", "")))
        if item.issue is None and not item.reason:
            raise ValueError(f"{path}: {item.spec!r} names no issue and gives no reason")
        failures.append(item)
    skips = []
    for entry in doc.get("critest-skips") or []:
        skip = AllowedSkip(str(entry["message"]), str(entry.get("feature", "")),
                           entry.get("issue"), str(entry.get("host", "")))
        if (skip.issue is None) == (not skip.host):
            raise ValueError(f"{path}: skip {skip.message!r} needs either an issue or a host note")
        skips.append(skip)
    return failures, skips


@dataclass
class Verdict:
    """Every spec sorted, and what makes the run fail."""

    passed: list[SpecResult] = field(default_factory=list)
    expected: list[tuple[SpecResult, ExpectedFailure]] = field(default_factory=list)
    skipped: list[tuple[SpecResult, AllowedSkip | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Counts, then each expected failure and each skip reason with its count."""
        lines = [
            f"critest: {len(self.passed)} passed, {len(self.expected)} failed as expected, "
            f"{len(self.skipped)} skipped, {len(self.problems)} problems"
        ]
        lines += [f"  expected failure: {r.name} -- {e.describe()}" for r, e in self.expected]
        reasons: dict[str, int] = {}
        for _spec, skip in self.skipped:
            key = ("filtered out: benchmark spec" if skip is None else
                   f"{skip.message} -- " + (f"{skip.feature} (issue {skip.issue})"
                                            if skip.issue else f"host: {skip.host}"))
            reasons[key] = reasons.get(key, 0) + 1
        lines += [f"  skipped x{n}: {why}" for why, n in sorted(reasons.items())]
        return "\n".join(lines)


def judge(specs: Sequence[SpecResult], expected: Sequence[ExpectedFailure],
          skips: Sequence[AllowedSkip], scope: str = "") -> Verdict:
    """Sort the specs; anything not passed, listed or allowed is a problem.

    A ``scope`` (the name prefix of a ``-ginkgo.focus`` run) leaves out the specs outside
    it, the entries that name none inside it, and the check for unused skip entries.
    """
    if scope:
        specs = [s for s in specs if s.name.startswith(scope)]
        expected = [e for e in expected
                    if e.spec.startswith(scope) or any(e.matches(s.name) for s in specs)]
    verdict = Verdict()
    used_entries: set[ExpectedFailure] = set()
    used_skips: set[AllowedSkip] = set()
    for spec in specs:
        entry = next((e for e in expected if e.matches(spec.name)), None)
        if entry is not None:
            used_entries.add(entry)
        if spec.state == "passed":
            verdict.passed.append(spec)
            if entry is not None:
                verdict.problems.append(
                    f"PASSED but on the expected-failure list ({entry.describe()}); remove it "
                    f"from {EXPECTED_FILE.name}: {spec.name}")
        elif spec.state in FAILED_STATES:
            if entry is not None:
                verdict.expected.append((spec, entry))
            else:
                verdict.problems.append(
                    f"FAILED ({spec.state}): {spec.name}\n    {_first_lines(spec.message)}")
        elif spec.state == "skipped":
            allowed, skip = _allowed_skip(spec, skips)
            if entry is not None:
                verdict.problems.append(
                    f"SKIPPED but on the expected-failure list ({entry.describe()}): {spec.name}")
            elif not allowed:
                verdict.problems.append(f"SKIPPED for no recorded reason: {spec.name}\n"
                                        f"    {_first_lines(spec.message)}")
            else:
                verdict.skipped.append((spec, skip))
                if skip is not None:
                    used_skips.add(skip)
        else:
            verdict.problems.append(f"unexpected state {spec.state!r}: {spec.name}")
    for entry in expected:
        if entry not in used_entries:
            verdict.problems.append(f"expected-failure entry matches no spec: {entry.spec}")
    for skip in skips:
        if not scope and skip.issue is not None and skip not in used_skips:
            verdict.problems.append(
                f"no spec was skipped with {skip.message!r} ({skip.feature}, issue {skip.issue}); "
                f"remove the entry from {EXPECTED_FILE.name}")
    return verdict


def _allowed_skip(spec: SpecResult,
                  skips: Sequence[AllowedSkip]) -> tuple[bool, AllowedSkip | None]:
    """Whether the skip is allowed, and by which entry (None: critest's benchmark filter)."""
    if not spec.message:
        return "benchmark" in spec.name, None
    found = next((s for s in skips if s.message in spec.message), None)
    return found is not None, found


def _first_lines(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[:lines])


def run(args: Sequence[str], log: Path, timeout: float, env: dict[str, str]) -> int:
    """Run critest with ``args``, output to ``log``; kill its process group on timeout."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(critest_binary()), *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env}, start_new_session=True)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def endpoint_args(socket: Path, config_file: Path) -> list[str]:
    """Both endpoints on ``socket``; ``config_file`` keeps /etc/crictl.yaml out of the run."""
    endpoint = f"unix://{socket}"
    return [f"-runtime-endpoint={endpoint}", f"-image-endpoint={endpoint}",
            f"-config={config_file}", "-ginkgo.no-color"]
