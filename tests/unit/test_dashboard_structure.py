"""Structure of grafana/dashboards/vantage-exporter.json, checked without a network.

The end-to-end test (tests/e2e/test_dashboard_e2e.py) proves that every query returns data from a
real Prometheus scraping a real exporter; this one keeps the dashboard well-formed and its queries
tied to the metric contract of DESIGN.md in every run, including where no Prometheus is installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import exported_sample_names


def _load_dashboard_helpers() -> ModuleType:
    # By file path rather than as a package import: works whatever pytest's import mode and
    # whether tests/ is a package or not.
    path = Path(__file__).resolve().parents[1] / "e2e" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("vantage_dashboard_helpers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dash = _load_dashboard_helpers()
DASHBOARD: dict[str, Any] = dash.load_dashboard()
QUERIES = list(dash.iter_queries(DASHBOARD))

# What the exporter really emits (rendered from exporter.metrics), so a renamed metric breaks
# this test as well as the end-to-end one.
EXPORTED_METRICS = exported_sample_names()

GRID_COLUMNS = 24
ROWS = ["Overview", "Latency", "Failures", "TLS", "Exporter health"]


def _query_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = item
    return f"{panel['id']}-{panel['title']}-{target['refId']}"


def _panels() -> list[dict[str, Any]]:
    return list(dash.iter_panels(DASHBOARD))


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def test_dashboard_is_provisioning_ready() -> None:
    assert DASHBOARD["uid"] == "vantage-exporter"
    assert len(DASHBOARD["uid"]) <= 40  # Grafana's limit on dashboard UIDs
    assert DASHBOARD["title"]
    assert DASHBOARD["id"] is None  # an id from another Grafana would clash when provisioned
    assert DASHBOARD["schemaVersion"] >= 39
    assert isinstance(DASHBOARD["refresh"], str)  # schema 40: refresh is always a string
    assert "time_options" not in DASHBOARD.get("timepicker", {})  # schema 41 dropped it
    assert not DASHBOARD.get("__inputs"), "use the datasource variable, not import-time inputs"


def test_variables() -> None:
    variables = _variables()
    assert set(variables) >= {"datasource", "job", "instance", "target"}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for name in ("job", "instance", "target"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == dash.DATASOURCE_REF
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        # Without an allValue, "All" expands to one alternation of every value: with
        # thousands of targets that is a regex Prometheus rejects or chokes on.
        assert variable["allValue"] == ".+"


def test_variable_queries_read_exported_metrics_and_earlier_variables() -> None:
    seen: set[str] = set()
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            query = dash.variable_query(variable)
            selector, _label = dash.parse_label_values(query)
            assert selector is not None, f"{variable['name']}: label_values needs a metric"
            assert dash.metric_names(selector) <= EXPORTED_METRICS
            # A variable may only depend on variables defined before it (Grafana resolves in order).
            assert dash.referenced_variables(query) <= seen, variable["name"]
        seen.add(variable["name"])


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_grid_positions_fit_and_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels():
        pos = panel["gridPos"]
        assert pos["w"] >= 1, panel["title"]
        assert pos["h"] >= 1, panel["title"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in _panels():
        assert panel["datasource"] == dash.DATASOURCE_REF, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == dash.DATASOURCE_REF, (panel["title"], target["refId"])


def test_every_panel_says_how_to_read_it() -> None:
    for panel in _panels():
        assert len(panel.get("description", "")) >= 40, panel["title"]


def test_panels_with_queries_are_not_rows_and_ref_ids_are_unique() -> None:
    for panel in _panels():
        targets = panel.get("targets", [])
        if panel["type"] == "row":
            assert not targets
            continue
        assert targets, panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_rows_from_the_issue_in_order_each_with_panels() -> None:
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ROWS
    assert DASHBOARD["panels"][0]["type"] == "row", "every panel belongs to a row"
    current = None
    per_row: dict[str, list[dict[str, Any]]] = {}
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            assert not panel["collapsed"]
            continue
        assert current is not None
        per_row.setdefault(current, []).append(panel)
    assert set(per_row) == set(ROWS)


def _row_of(title: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    current = None
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
        elif current == title:
            out.append(panel)
    return out


def _uses(panels: list[dict[str, Any]], panel_type: str, metric: str, text: str = "") -> bool:
    return any(
        p["type"] == panel_type
        and any(metric in dash.metric_names(t["expr"]) and text in t["expr"] for t in p["targets"])
        for p in panels
    )


# What the issue asks of each row: (row, panel type, metric read, a fragment of the query).
REQUIRED = [
    ("Overview", "stat", "vantage_target_info", ""),
    ("Overview", "stat", "vantage_probe_last_outcome", ""),
    ("Overview", "stat", "vantage_probes_total", 'outcome="success"'),
    ("Overview", "table", "vantage_probe_last_outcome", ""),
    ("Overview", "timeseries", "vantage_probes_total", "by (outcome)"),
    ("Latency", "timeseries", "vantage_probe_duration_seconds_bucket", "histogram_quantile(0.5,"),
    ("Latency", "timeseries", "vantage_probe_duration_seconds_bucket", "histogram_quantile(0.9,"),
    ("Latency", "timeseries", "vantage_probe_duration_seconds_bucket", "histogram_quantile(0.99,"),
    ("Latency", "heatmap", "vantage_probe_duration_seconds_bucket", "by (le)"),
    ("Latency", "barchart", "vantage_probe_phase_duration_seconds", "phase"),
    ("Failures", "timeseries", "vantage_probes_total", "by (target, outcome)"),
    ("Failures", "bargauge", "vantage_probes_total", "topk("),
    ("Failures", "state-timeline", "vantage_probe_http_status_code", ""),
    ("TLS", "bargauge", "vantage_probe_tls_cert_expiry_timestamp_seconds", "sort("),
    ("Exporter health", "timeseries", "vantage_scheduler_lag_seconds_bucket", "0.99"),
    ("Exporter health", "timeseries", "vantage_probes_in_flight", ""),
    ("Exporter health", "timeseries", "vantage_probes_skipped_total", ""),
    ("Exporter health", "stat", "vantage_config_last_reload_successful", ""),
    ("Exporter health", "table", "vantage_build_info", ""),
]


@pytest.mark.parametrize(("row", "panel_type", "metric", "fragment"), REQUIRED)
def test_issue_panel_present(row: str, panel_type: str, metric: str, fragment: str) -> None:
    assert _uses(_row_of(row), panel_type, metric, fragment)


def test_heatmap_reads_buckets_as_a_heatmap() -> None:
    heatmaps = [p for p in _panels() if p["type"] == "heatmap"]
    assert heatmaps
    for panel in heatmaps:
        assert panel["options"]["calculate"] is False
        assert all(t["format"] == "heatmap" for t in panel["targets"])


@pytest.mark.parametrize("item", QUERIES, ids=_query_id)
def test_query_reads_only_exported_metrics(item: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _panel, target = item
    names = dash.metric_names(target["expr"])
    assert names, "a query that reads no metric"
    assert names <= EXPORTED_METRICS, names - EXPORTED_METRICS


@pytest.mark.parametrize("item", QUERIES, ids=_query_id)
def test_query_uses_only_defined_variables(item: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _panel, target = item
    defined = set(_variables()) | set(dash.BUILTIN_VALUES)
    assert dash.referenced_variables(target["expr"]) <= defined
    assert "$datasource" not in target["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    # promtool 2.42 has no bare-expression check: a recording rule per query is one.
    values = {"job": "vantage", "instance": ".+", "target": "(a|b)"}
    rules = [
        {
            "record": f"panel_{panel['id']}_{target['refId']}",
            "expr": dash.substitute(target["expr"], values),
        }
        for panel, target in QUERIES
    ]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


PROVISIONING = Path(__file__).resolve().parents[2] / "grafana" / "provisioning"


def test_provisioning_files() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    assert datasource["url"].startswith("http")

    dashboards = yaml.safe_load((PROVISIONING / "dashboards" / "vantage.yaml").read_text())
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/vantage"
    assert provider["allowUiUpdates"] is False  # the repository's JSON is the source of truth
