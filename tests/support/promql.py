"""The metric names a PromQL expression (or a Grafana dashboard's queries) reads.

A small tokenizer, not a full parser: it skips strings, label matchers ``{...}``,
range and subquery brackets ``[...]``, the label lists of ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right``, numbers, durations and Grafana
variables. Every other identifier is a function (when ``(`` follows), a keyword,
or a metric name. An unknown function is an error, so a misspelled function
is caught as surely as a misspelled metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTIONS = _words("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
days_in_month deg delta deriv exp floor histogram_avg histogram_count histogram_fraction
histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
double_exponential_smoothing hour idelta increase irate label_join label_replace ln log10
log2 last_over_time mad_over_time max_over_time min_over_time minute month pi
predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin
sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
stdvar_over_time sum_over_time tan tanh time timestamp vector year
""")
AGGREGATIONS = _words("""
sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
limit_ratio
""")
LABEL_LIST_KEYWORDS = _words("by without on ignoring group_left group_right")
KEYWORDS = _words("and or unless bool offset atan2 inf nan start end")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[{}()\[\],@]|[-+*/%^]|==|!=|=~|!~|>=|<=|[<>=])
""", re.VERBOSE)


class PromQLError(ValueError):
    """An expression this reader cannot make sense of."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
    return out


def _skip_group(tokens: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """The index after the group that opens at ``tokens[start]``."""
    depth = 0
    for i in range(start, len(tokens)):
        kind, text = tokens[i]
        if kind == "punct" and text == opening:
            depth += 1
        elif kind == "punct" and text == closing:
            depth -= 1
            if depth == 0:
                return i + 1
    raise PromQLError(f"unbalanced {opening}{closing}")


def _check_balanced(tokens: list[tuple[str, str]], expr: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for kind, text in tokens:
        if kind != "punct":
            continue
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            raise PromQLError(f"unbalanced {text!r} in {expr!r}")
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects; PromQLError for an unknown function."""
    tokens = _tokens(expr)
    _check_balanced(tokens, expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "punct" and text == "{":
            i = _skip_group(tokens, i, "{", "}")  # label matchers: label names and values
            continue
        if kind == "punct" and text == "[":
            i = _skip_group(tokens, i, "[", "]")  # a range or subquery: durations, variables
            continue
        if kind != "ident":
            i += 1
            continue
        if text in LABEL_LIST_KEYWORDS:
            i += 1
            if i < len(tokens) and tokens[i][1] == "(":
                i = _skip_group(tokens, i, "(", ")")  # a list of label names
            continue
        if nxt == "(" and (text in FUNCTIONS or text in AGGREGATIONS):
            i += 1
            continue
        if text in AGGREGATIONS and nxt in ("by", "without"):
            i += 1
            continue
        if text in KEYWORDS:
            i += 1
            continue
        if nxt == "(":
            raise PromQLError(f"unknown function {text}() in {expr!r}")
        names.add(text)
        i += 1
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.*?)\s*,\s*[A-Za-z_]\w*\s*\)\s*$")


def variable_query_names(query: str) -> set[str]:
    """The metrics a Grafana Prometheus variable query reads (``label_values(sel, label)``)."""
    m = _LABEL_VALUES.match(query)
    if m is not None:
        return metric_names(m.group("selector"))
    if re.match(r"^\s*label_values\(\s*[A-Za-z_]\w*\s*\)\s*$", query):
        return set()  # every series' label: no metric named
    inner = re.match(r"^\s*query_result\((?P<q>.*)\)\s*$", query)
    return metric_names(inner.group("q") if inner else query)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel.get('title')!r} {target.get('refId')}",
                              target["expr"]))  # fmt: skip
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            found.append((f"variable {var['name']!r}", f"label_values:{text}"))
    return found


def names_of(query: str) -> set[str]:
    if query.startswith("label_values:"):
        return variable_query_names(query.removeprefix("label_values:"))
    return metric_names(query)


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def exported_names(scrape: str) -> set[str]:
    """Names a scrape in Prometheus text format exports: families (from # TYPE) and samples."""
    names: set[str] = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            names.add(parts[2])
            if parts[3] == "histogram":
                names.update(parts[2] + s for s in HISTOGRAM_SUFFIXES)
            if parts[3] == "counter" and not parts[2].endswith("_total"):
                names.add(parts[2] + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def missing_metrics(dashboard: dict[str, Any], exported: set[str]) -> dict[str, set[str]]:
    """Per query, the metric names it reads that ``exported`` lacks (empty: all there)."""
    missing = {}
    for where, query in dashboard_queries(dashboard):
        absent = names_of(query) - exported
        if absent:
            missing[where] = absent
    return missing
