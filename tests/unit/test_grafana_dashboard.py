"""deploy/grafana/peapod.json is importable as shipped, and the PromQL reader finds its names.

Whether every metric a query names is exported is checked against a real daemon's
scrape in tests/integration/test_metrics_dashboard.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.promql import (
    PromQLError,
    dashboard_queries,
    exported_names,
    load_dashboard,
    metric_names,
    missing_metrics,
    names_of,
    panels,
    variable_query_names,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "peapod.json"


@pytest.fixture(scope="module")
def dashboard() -> dict:  # type: ignore[type-arg]
    return load_dashboard(DASHBOARD)


def test_the_dashboard_has_a_datasource_and_an_instance_variable(dashboard: dict) -> None:  # type: ignore[type-arg]
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["multi"] and instance["includeAll"]
    assert instance["datasource"]["uid"] == "${datasource}"


def test_every_query_uses_the_variables(dashboard: dict) -> None:  # type: ignore[type-arg]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_the_dashboard_covers_what_an_operator_asks(dashboard: dict) -> None:  # type: ignore[type-arg]
    names = set().union(*(names_of(q) for _, q in dashboard_queries(dashboard)))
    for wanted in (
        "peapod_operations_total", "peapod_operations_errors_total",
        "peapod_operations_latency_seconds_bucket", "peapod_image_pulls_total",
        "peapod_image_pulls_bytes_total", "peapod_image_pull_duration_seconds_bucket",
        "peapod_cni_plugin_duration_seconds_bucket", "peapod_cni_errors_total",
        "peapod_containers_oom_by_namespace_total", "peapod_containers",
        "peapod_streaming_sessions_active", "peapod_exec_sync_total",
        "peapod_container_events_dropped_subscribers_total",
        "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
        "peapod_process_threads", "python_gc_collections_total",
    ):  # fmt: skip
        assert wanted in names, wanted


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('histogram_quantile(0.99, sum by (operation, le) (rate(a_bucket{x="1"}[5m])))',
         {"a_bucket"}),
        ('sum without (code) (rate(b_total{instance=~"$instance"}[$__rate_interval]))',
         {"b_total"}),
        ('c / on (instance) group_left (runtime) d{label="has {braces} and (parens)"}',
         {"c", "d"}),
        ("e offset 5m and f > bool 3 or g unless h", {"e", "f", "g", "h"}),
        ("max_over_time(rate(i[1m])[10m:30s])", {"i"}),
        ('label_replace(j, "dst", "$1", "src", "(.*)")', {"j"}),
        ("topk(3, k) + count by (state) (l) * 1e3 - 0x10", {"k", "l"}),
        ("sum(m{a='single quoted'}) / ignoring(a) n", {"m", "n"}),
        ("rate(o:recorded:rate5m[5m]) @ end()", {"o:recorded:rate5m"}),
        ("sum by (le) (p_bucket) by", {"p_bucket"}),
        ('{__name__="q"}', set()),
    ],
)  # fmt: skip
def test_metric_names_skip_functions_keywords_labels_and_strings(
    expr: str, names: set[str]
) -> None:
    assert metric_names(expr) == names


def test_an_unknown_function_is_an_error_not_a_metric() -> None:
    with pytest.raises(PromQLError, match="histogram_quantil"):
        metric_names("histogram_quantil(0.5, sum by (le) (rate(a_bucket[5m])))")
    with pytest.raises(PromQLError):
        metric_names("sum(rate(a[5m])")  # unbalanced


def test_variable_queries() -> None:
    assert variable_query_names("label_values(peapod_operations_total, instance)") == {
        "peapod_operations_total"}
    assert variable_query_names('label_values(x{job="a"}, instance)') == {"x"}
    assert variable_query_names("label_values(instance)") == set()


def test_a_misspelled_metric_is_reported_missing() -> None:
    scrape = "\n".join([
        "# HELP peapod_operations_total CRI calls.",
        "# TYPE peapod_operations_total counter",
        'peapod_operations_total{operation="Version"} 3.0',
        "# TYPE peapod_operations_latency_seconds histogram",
        "# TYPE peapod_pods gauge",
    ])  # fmt: skip
    exported = exported_names(scrape)
    assert {"peapod_operations_latency_seconds_bucket", "peapod_pods"} <= exported

    def board(expr: str) -> dict:  # type: ignore[type-arg]
        return {"panels": [{"type": "timeseries", "id": 1, "title": "t",
                            "targets": [{"refId": "A", "expr": expr}]}]}

    good = board("sum(rate(peapod_operations_total[5m])) + "
                 "histogram_quantile(0.5, rate(peapod_operations_latency_seconds_bucket[5m]))")
    assert missing_metrics(good, exported) == {}
    bad = board("sum(rate(peapod_operatons_total[5m]))")
    assert missing_metrics(bad, exported) == {"panel 't' A": {"peapod_operatons_total"}}
