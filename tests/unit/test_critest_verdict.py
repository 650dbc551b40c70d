"""The rules that judge a critest run: the expected-failure list may only shrink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.critest import (
    AllowedSkip,
    ExpectedFailure,
    SpecResult,
    judge,
    load_expected,
    parse_report,
)

LISTED = ExpectedFailure("[k8s.io] Streaming exec", "streaming (Exec)", 12)
BY_REGEX = ExpectedFailure("/.*listing stats.*/", "ListContainerStats", 13)
USERNS = AllowedSkip("no runtime handler found which supports user namespaces",
                     "user namespaces", 14)
HOST = AllowedSkip("AppArmor is disabled on this host", host="no AppArmor")


def verdict(*specs: SpecResult) -> list[str]:
    return judge(specs, [LISTED, BY_REGEX], [USERNS, HOST]).problems


def test_passes_listed_failures_and_recorded_skips() -> None:
    problems = verdict(
        SpecResult("[k8s.io] Container start", "passed"),
        SpecResult("[k8s.io] Streaming exec", "failed", "Unimplemented"),
        SpecResult("[k8s.io] Container listing stats for three", "failed", "Unimplemented"),
        SpecResult("[k8s.io] UserNamespaces pod", "skipped", USERNS.message),
        SpecResult("[k8s.io] AppArmor load", "skipped", HOST.message),
        SpecResult("[k8s.io] Container benchmark about operations", "skipped"),
    )
    assert problems == []


def test_an_unlisted_failure_is_named_with_its_message() -> None:
    [problem, *_] = verdict(SpecResult("[k8s.io] Container start", "timedout", "took 60 s"))
    assert "FAILED (timedout): [k8s.io] Container start" in problem and "took 60 s" in problem


def test_a_listed_spec_that_passes_fails_the_run_until_removed() -> None:
    problems = verdict(
        SpecResult("[k8s.io] Streaming exec", "passed"),
        SpecResult("[k8s.io] Container listing stats", "failed"),
        SpecResult("[k8s.io] UserNamespaces pod", "skipped", USERNS.message),
    )
    assert problems == [
        "PASSED but on the expected-failure list (streaming (Exec) (issue 12)); remove it from "
        "expected-failures.yaml: [k8s.io] Streaming exec"
    ]


def test_entries_that_match_nothing_are_stale() -> None:
    problems = verdict(SpecResult("[k8s.io] Container start", "passed"))
    assert "expected-failure entry matches no spec: [k8s.io] Streaming exec" in problems
    assert any("no spec was skipped with" in p and "issue 14" in p for p in problems)
    assert not any("AppArmor" in p for p in problems)  # a host skip may go unused


def test_unrecorded_skips_and_skipped_listed_specs_are_problems() -> None:
    problems = verdict(
        SpecResult("[k8s.io] Streaming exec", "skipped", "not today"),
        SpecResult("[k8s.io] Container listing stats", "failed"),
        SpecResult("[k8s.io] Container start", "skipped", "feature gate off"),
        SpecResult("[k8s.io] Container stop", "skipped"),
        SpecResult("[k8s.io] UserNamespaces pod", "skipped", USERNS.message),
    )
    assert [p.splitlines()[0] for p in problems] == [
        "SKIPPED but on the expected-failure list (streaming (Exec) (issue 12)): "
        "[k8s.io] Streaming exec",
        "SKIPPED for no recorded reason: [k8s.io] Container start",
        "SKIPPED for no recorded reason: [k8s.io] Container stop",
    ]


def test_parse_report_joins_containers_and_keeps_failed_suite_nodes(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps([{
        "SuiteConfig": {"RandomSeed": 42}, "RunTime": 3_000_000_000,
        "SpecReports": [
            {"LeafNodeType": "BeforeSuite", "State": "passed"},
            {"LeafNodeType": "AfterSuite", "State": "failed", "Failure": {"Message": "boom"}},
            {"LeafNodeType": "It", "State": "skipped", "LeafNodeText": "b",
             "ContainerHierarchyTexts": ["[k8s.io] A", "ctx"],
             "Failure": {"Message": "why"}, "RunTime": 5_000_000},
        ],
    }]))
    parsed = parse_report(report)
    assert parsed.seed == 42 and parsed.seconds == 3.0
    assert parsed.specs == [SpecResult("[AfterSuite]", "failed", "boom"),
                            SpecResult("[k8s.io] A ctx b", "skipped", "why", 0.005)]


def test_the_project_list_is_well_formed_and_names_open_feature_issues() -> None:
    failures, skips = load_expected()
    assert failures and skips
    for entry in failures:
        assert entry.issue in (12, 13, 14, 15) or (entry.issue is None and entry.reason)
    for skip in skips:
        assert skip.issue in (12, 13, 14, 15, None)


def test_an_entry_without_issue_or_reason_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "expected.yaml"
    bad.write_text("critest:\n  - spec: x\n    feature: y\n    issue: null\n")
    with pytest.raises(ValueError, match="names no issue and gives no reason"):
        load_expected(bad)


def test_a_focused_run_is_judged_within_its_scope() -> None:
    specs = [SpecResult("[k8s.io] Streaming exec", "passed"),
             SpecResult("[k8s.io] Container listing stats", "skipped")]
    problems = judge(specs, [LISTED, BY_REGEX], [USERNS], scope="[k8s.io] Streaming").problems
    assert [p.split(";")[0] for p in problems] == [
        "PASSED but on the expected-failure list (streaming (Exec) (issue 12))"]
    assert judge(specs[1:], [BY_REGEX], [USERNS], scope="[k8s.io] Streaming").problems == []
