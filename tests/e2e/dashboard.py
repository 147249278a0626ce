"""Reading the Grafana dashboard as data: its panels, queries, variables and metric names.

Shared by the structural test (tests/unit/test_dashboard_structure.py, no network) and the
end-to-end test (which runs every query against a real Prometheus). Pure functions, stdlib only.

    >>> metric_names('sum by (le) (rate(vantage_probe_duration_seconds_bucket{target=~"$t"}[5m]))')
    {'vantage_probe_duration_seconds_bucket'}
    >>> substitute('rate(x{job=~"$job"}[$__rate_interval])', {"job": "vantage"})
    'rate(x{job=~"vantage"}[15s])'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARD_PATH = (
    Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "vantage-exporter.json"
)

# The data source every panel, query and query variable must use: the dashboard's own variable,
# so that it works on any Grafana whatever its Prometheus data source is called.
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's built-in interval variables, replaced by values that make sense for a Prometheus
# scraping every second and holding about a minute of data (the end-to-end setup).
BUILTIN_VALUES: Mapping[str, str] = {
    "__rate_interval": "15s",
    "__interval": "2s",
    "__interval_ms": "2000",
    "__range": "1m",
    "__range_s": "60",
    "__range_ms": "60000",
}

# PromQL words that look like metric names but are not: binary operators, modifiers, literals.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "offset", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        dashboard: dict[str, Any] = json.load(f)
    return dashboard


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of every panel."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v.get("type") == "query"]


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        return str(query.get("query", ""))
    return str(query or variable.get("definition", ""))


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(metric{sel}, label)`` -> (``metric{sel}``, ``label``)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


def referenced_variables(text: str) -> set[str]:
    """Names of the template variables a query uses, in any of Grafana's three syntaxes."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables as Grafana would before sending the query to Prometheus.

    ``values`` holds the template variables (already formatted, e.g. as a regex); the built-in
    interval variables come from BUILTIN_VALUES. An unknown variable raises KeyError.
    """
    merged = {**BUILTIN_VALUES, **values}

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return merged[name]

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (by name, not via ``{__name__=...}``).

    Strips what cannot be a metric name (strings, label matchers, ranges, label lists of
    by/on/...), then keeps identifiers that are not function calls or keywords.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana formats it for ``=~``, escaped for a PromQL string."""
    escaped = [re.escape(v) for v in values]
    regex = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return regex.replace("\\", "\\\\")
