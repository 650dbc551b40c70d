"""The census of a kubelet's CRI errors: parsing klog lines and judging them."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.kubelet_log import (
    EXPECTED_FAILURES,
    AlreadyRemoved,
    Expected,
    Window,
    check,
    cri_errors,
    load_expected,
    removed_containers,
    tally,
)

CID = "ab" * 32
LOG = f"""\
I1205 13:20:50.000001   23326 kubelet.go:2788] "SyncLoop ADD" source="file"
E1205 13:20:52.374529   23326 remote_runtime.go:951] "ListContainerStats with filter from \
runtime service failed" err="rpc error: code = Unimplemented desc = RuntimeService.\
ListContainerStats is not implemented by peapod yet" filter=""
E1205 13:20:52.374600   23326 eviction_manager.go:305] "Eviction manager: failed" err="failed \
to list pod stats: rpc error: code = Unimplemented desc = RuntimeService.ListContainerStats \
is not implemented by peapod yet"
E1205 13:20:53.100000   23326 remote_runtime.go:667] "verify ContainerStatus failed" err="id \
is not set" containerID="x"
E1205 13:20:54.000000   23326 remote_runtime.go:657] "ContainerStatus from runtime service \
failed" err="rpc error: code = NotFound desc = container {CID} not found" containerID="{CID}"
W1205 13:20:55.000000   23326 remote_runtime.go:355] "StopPodSandbox from runtime service \
failed" err="rpc error: code = Unavailable desc = connection error: desc = \\"transport: \
Error while dialing\\""
E1205 13:20:56.000000   23326 kubelet.go:1700] "Failed to set rlimit on max file handles" \
err="operation not permitted"
"""
STATS = Expected(r"desc = RuntimeService\.ListContainerStats is not implemented",
                 "ListContainerStats", 13)


def test_collects_cri_client_lines_and_any_line_with_a_grpc_status() -> None:
    errors = cri_errors(LOG, year=2026)
    assert [(e.source, e.code) for e in errors] == [
        ("remote_runtime.go", "Unimplemented"), ("eviction_manager.go", "Unimplemented"),
        ("remote_runtime.go", ""), ("remote_runtime.go", "NotFound"),
        ("remote_runtime.go", "Unavailable")]
    assert errors[0].at == datetime(2026, 12, 5, 13, 20, 52, 374529).astimezone()


def test_every_line_needs_an_entry_and_every_entry_a_line() -> None:
    errors = cri_errors(LOG, year=2026)
    unused = Expected("desc = RuntimeService\\.Attach is not implemented", "Attach", 12)
    verdict = check(errors, [STATS, unused], [], [])
    assert [e.source for e in verdict.unexplained] == ["remote_runtime.go"] * 3
    assert verdict.absent == [unused]
    assert "no longer appear" in verdict.report() and "Attach (issue 12)" in verdict.report()


def test_windows_and_removed_containers_explain_only_what_they_name() -> None:
    errors = cri_errors(LOG, year=2026)
    at = errors[-1].at
    restart = Window(at - timedelta(seconds=1), at + timedelta(seconds=1),
                     r"code = Unavailable desc = connection error", "restart")
    too_early = Window(at - timedelta(seconds=9), at - timedelta(seconds=5),
                       r"code = Unavailable", "earlier")
    removed = AlreadyRemoved({CID: errors[3].at - timedelta(seconds=2)})
    verdict = check(errors, [STATS], [], [restart, too_early, removed])
    assert [e.line for e in verdict.unexplained] == [errors[2].line]  # verify ... failed
    later = AlreadyRemoved({CID: errors[3].at + timedelta(seconds=1)})  # removed afterwards
    assert not later.covers(errors[3])


def test_removed_containers_from_peapods_text_log() -> None:
    text = (f'time=2026-12-05T13:38:24.952Z level=info logger=peapod.containers '
            f'msg="container removed" container={CID}\n'
            'time=2026-12-05T13:38:25.000Z level=debug logger=peapod.rpc msg="rpc done"\n')
    removed = removed_containers(text)
    assert list(removed) == [CID]
    assert removed[CID].isoformat() == "2026-12-05T13:38:24.952000+00:00"


def test_the_kubelet_section_of_the_list_loads() -> None:
    """The real list's section loads (it may be empty: it only shrinks)."""
    entries = load_expected(EXPECTED_FAILURES)
    assert isinstance(entries, list)
    assert all(e.issue in (12, 13) and e.feature for e in entries)


def test_load_expected_reads_entries_and_refuses_malformed_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("kubelet:\n  - match: 'code = Unimplemented'\n"
                    "    feature: ListContainerStats\n    issue: 13\n")
    assert load_expected(good) == [Expected("code = Unimplemented", "ListContainerStats", 13)]
    for bad in ("critest: []\n", "kubelet:\n  - match: x\n",
                "kubelet:\n  - {match: x, feature: y, why: z}\n"):
        path = tmp_path / "bad.yaml"
        path.write_text(bad)
        with pytest.raises(ValueError):
            load_expected(path)


def test_tally_counts_lines_by_source_message_and_code() -> None:
    counts = tally(cri_errors(LOG, year=2026))
    assert counts["remote_runtime.go: ListContainerStats with filter from runtime service "
                  "failed (Unimplemented)"] == 1
    assert counts["remote_runtime.go: verify ContainerStatus failed (no status)"] == 1
    assert sum(counts.values()) == 5
