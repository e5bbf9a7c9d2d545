"""The Grafana dashboard's queries parse as PromQL and read only metrics the workers really export.

The exported names come from the registry a worker fills when it starts (shared.service.Runtime: FastStream's
Kafka Prometheus middleware and shared.metrics on the process's default registry), not from a list kept here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from shared.metrics import PREFIX
from shared.service import Runtime
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
"""Grafana's own variables, replaced by a value of their kind before parsing."""
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes, including those of labelled metrics with no sample yet."""
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """What an embedding worker's /metrics can show once its metrics are set up (the runtime does that)."""
    Runtime("embedding", settings=Settings())
    return series_names(REGISTRY)


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every query, rows' nested panels included."""
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"]


def substitute(expr: str, variables: set[str]) -> str:
    """Replace Grafana variables with values of their kind; an undefined one fails."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        assert name in variables, f"undefined dashboard variable ${name} in {expr}"
        return ".*"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(node: Any) -> Iterator[str]:
    """Every metric a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        for matcher in node.matchers.matchers:
            if matcher.name == "__name__":
                yield matcher.value
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield from metric_names(node.vector_selector)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from metric_names(node.lhs)
        yield from metric_names(node.rhs)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from metric_names(arg)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from metric_names(node.expr)
        if node.param is not None:
            yield from metric_names(node.param)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from metric_names(node.expr)


def variable_metrics(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable, metric) of every label_values(metric, label) variable query."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((\w+)\s*,\s*\w+\)", query)
        assert match, f"variable {variable['name']}: unsupported query {query}"
        yield variable["name"], match.group(1)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_query_parses_and_reads_exported_metrics(path: Path, exported: set[str]) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    queries = list(targets(dashboard))
    assert queries, f"{path.name} has no query"
    for title, expr in queries:
        tree = promql_parser.parse(substitute(expr, variables))  # raises on a syntax error
        names = set(metric_names(tree))
        assert names, f"{title}: {expr} reads no metric"
        unknown = names - exported
        assert not unknown, f"{title}: {sorted(unknown)} are not exported by the workers"
    for name, metric in variable_metrics(dashboard):
        assert metric in exported, f"variable {name} reads {metric}, which no worker exports"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_pipeline_metric_has_a_panel(path: Path, exported: set[str]) -> None:
    """The dashboard covers what the pipeline measures: each lmgpa_* family appears in some query."""
    dashboard = json.loads(path.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used = {
        name
        for _, expr in targets(dashboard)
        for name in metric_names(promql_parser.parse(substitute(expr, variables)))
    }
    families = {family.name for family in REGISTRY.collect() if family.name.startswith(f"{PREFIX}_")}
    assert families, "the worker runtime registered no lmgpa_ metric"
    missing = {family for family in families if not any(name.startswith(family) for name in used)}
    assert not missing, f"no panel reads {sorted(missing)}"


def test_the_check_catches_a_wrong_name(exported: set[str]) -> None:
    """A misspelt metric (or a broken expression) is refused, so the checks above can fail."""
    tree = promql_parser.parse("sum(rate(lmgpa_stage_unit_total[5m]))")
    assert set(metric_names(tree)) - exported == {"lmgpa_stage_unit_total"}
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(lmgpa_stage_units_total[5m])")
