"""Every query of the Grafana dashboard returns data from a real Prometheus scraping real exporters.

The stack (see conftest.py): local servers that make probes end in success, timeout,
connect_error, http_error and tls_error; two vantage-exporter replicas probing them every second;
Prometheus scraping both every second with the repo's alert rules loaded. Each dashboard query is
sent to Prometheus' HTTP API with the template variables filled in as Grafana would, once with every
value selected one by one and once with "All", and must be valid and return data.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from .dashboard import (
    iter_queries,
    load_dashboard,
    metric_names,
    parse_label_values,
    query_variables,
    regex_value,
    substitute,
    variable_query,
)
from .stack import EXPECTED_OUTCOMES, Stack, http_get, prometheus_api

pytestmark = pytest.mark.e2e

DASHBOARD = load_dashboard()
QUERIES = list(iter_queries(DASHBOARD))
MODES = ("selected", "all")
_NOT_EVALUATED = "0001-01-01T00:00:00Z"


def variable_values(stack: Stack, mode: str) -> dict[str, str]:
    if mode == "all":
        return {"job": ".+", "instance": ".+", "target": ".+"}  # the variables' allValue
    return {
        "job": regex_value([stack.job]),
        "instance": regex_value(list(stack.instances)),
        "target": regex_value(list(stack.targets)),
    }


def _query_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = item
    slug = re.sub(r"[^a-z0-9]+", "-", panel["title"].lower()).strip("-")
    return f"{panel['id']}-{slug}-{target['refId']}"


def _series(stack: Stack, selector: str) -> list[dict[str, str]]:
    data: list[dict[str, str]] = prometheus_api(
        stack.prometheus_url,
        "/api/v1/series",
        {"match[]": selector, "start": str(time.time() - 300)},
    )
    return data


def test_prometheus_scrapes_every_exporter_cleanly(stack: Stack) -> None:
    # A target is "up" with no lastError only if Prometheus parsed the whole exposition.
    while True:
        active = prometheus_api(stack.prometheus_url, "/api/v1/targets")["activeTargets"]
        health = {t["labels"]["instance"]: (t["health"], t["lastError"]) for t in active}
        if all(h == "up" for h, _ in health.values()) and len(health) == len(stack.instances):
            break
        assert time.monotonic() < stack.deadline, f"{health}\n{stack.logs()}"
        time.sleep(0.5)
    assert health == {instance: ("up", "") for instance in stack.instances}


def test_local_targets_end_in_their_outcome_class(stack: Stack) -> None:
    expr = f'sum by (target, outcome) (vantage_probes_total{{job="{stack.job}"}}) > 0'
    while True:
        seen: dict[str, set[str]] = {}
        for series in stack.query(expr):
            seen.setdefault(series["metric"]["target"], set()).add(series["metric"]["outcome"])
        if set(seen) == set(EXPECTED_OUTCOMES) or time.monotonic() > stack.deadline:
            break
        time.sleep(0.5)
    assert seen == {target: {outcome} for target, outcome in EXPECTED_OUTCOMES.items()}, (
        stack.logs()
    )


@pytest.mark.parametrize("variable", query_variables(DASHBOARD), ids=lambda v: v["name"])
def test_variable_query_lists_the_stack(stack: Stack, variable: dict[str, Any]) -> None:
    selector, label = parse_label_values(variable_query(variable))
    assert selector is not None
    selector = substitute(selector, variable_values(stack, "selected"))
    expected = {"job": {stack.job}, "instance": set(stack.instances), "target": set(stack.targets)}
    while True:
        values = {series[label] for series in _series(stack, selector) if label in series}
        if values == expected[variable["name"]] or time.monotonic() > stack.deadline:
            break
        time.sleep(0.5)
    assert values == expected[variable["name"]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("item", QUERIES, ids=_query_id)
def test_panel_query_returns_data(
    stack: Stack, item: tuple[dict[str, Any], dict[str, Any]], mode: str
) -> None:
    panel, target = item
    expr = substitute(target["expr"], variable_values(stack, mode))
    result = stack.query_until_nonempty(expr)
    assert result, f"{panel['title']} / {target['refId']}: no data for\n{expr}\n{stack.logs()}"
    # Two replicas probe the same targets: a per-target answer must be one per target (or per
    # target and outcome, phase, ...), never one per replica.
    for series in result:
        labels = series.get("metric", {})
        assert not ("target" in labels and "instance" in labels), (
            f"{panel['title']} / {target['refId']}: per-target series not aggregated over "
            f"instances: {labels}"
        )


def test_panel_queries_read_only_metrics_the_exporters_export(stack: Stack) -> None:
    exported: set[str] = set()
    for url in stack.exporter_urls:
        status, body = http_get(f"{url}/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                exported.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    used: dict[str, set[str]] = {}
    for panel, target in QUERIES:
        for name in metric_names(target["expr"]):
            used.setdefault(name, set()).add(panel["title"])
    for variable in query_variables(DASHBOARD):
        selector, _ = parse_label_values(variable_query(variable))
        for name in metric_names(selector or ""):
            used.setdefault(name, set()).add(f"variable {variable['name']}")
    missing = {name: sorted(panels) for name, panels in used.items() if name not in exported}
    assert not missing, f"queried but not exported: {missing}"


def test_status_table_has_one_row_per_target_with_its_outcome(stack: Stack) -> None:
    (table,) = [
        p for p in DASHBOARD["panels"] if p["type"] == "table" and p["title"] == "Target status"
    ]
    outcome_query = next(t for t in table["targets"] if "vantage_probe_last_outcome" in t["expr"])
    expr = substitute(outcome_query["expr"], variable_values(stack, "all"))
    while True:
        rows = [series["metric"] for series in stack.query(expr)]
        targets = sorted(row["target"] for row in rows)
        if targets == sorted(stack.targets) or time.monotonic() > stack.deadline:
            break
        time.sleep(0.5)
    assert targets == sorted(stack.targets), rows  # each target exactly once
    assert {row["target"]: row["outcome"] for row in rows} == EXPECTED_OUTCOMES


def test_alert_rules_evaluate_ok(stack: Stack) -> None:
    if stack.rules_file is None:
        pytest.skip("deploy/prometheus/vantage-alerts.yml does not exist yet")
    while True:
        groups = prometheus_api(stack.prometheus_url, "/api/v1/rules")["groups"]
        rules = [(g["name"], r) for g in groups for r in g["rules"]]
        if rules and all(r["lastEvaluation"] != _NOT_EVALUATED for _, r in rules):
            break
        assert time.monotonic() < stack.deadline, "rules not evaluated in time"
        time.sleep(0.5)
    unhealthy = {
        f"{group}/{rule['name']}": (rule["health"], rule.get("lastError", ""))
        for group, rule in rules
        if rule["health"] != "ok"
    }
    assert not unhealthy
