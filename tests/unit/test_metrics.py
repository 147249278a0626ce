"""Exposition: names, types, pre-initialised series, exact values, promtool-clean text."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import load_config_text
from exporter.metrics import Metrics
from exporter.outcome import OUTCOMES, PHASES, Outcome, ProbeResult
from tests.helpers import value

CONFIG = """
targets:
  - name: api
    url: http://127.0.0.1:1/
    labels: {team: payments}
  - name: 'odd "name" \\ with\\nescapes'
    url: http://127.0.0.1:2/
"""


def fresh() -> Metrics:
    m = Metrics()
    m.set_targets(load_config_text(CONFIG).targets)
    return m


def result(outcome: Outcome, duration: float = 0.2, status: int = 200) -> ProbeResult:
    return ProbeResult(outcome, duration, "", status,
                       dict(zip(PHASES, (0.01, 0.02, 0.03, 0.1, 0.04), strict=True)),
                       tls_cert_expiry=1.9e9 if outcome is Outcome.SUCCESS else 0.0)


def test_every_series_exists_before_the_first_probe() -> None:
    m = fresh()
    for o in OUTCOMES:
        assert value(m, "vantage_probes_total", target="api", outcome=o.value) == 0
        assert value(m, "vantage_probe_last_outcome", target="api", outcome=o.value) == 0
    for p in PHASES:
        assert value(m, "vantage_probe_phase_duration_seconds", target="api", phase=p) == 0
    for name in ("vantage_probe_success", "vantage_probe_http_status_code",
                 "vantage_probe_tls_cert_expiry_timestamp_seconds",
                 "vantage_probe_last_run_timestamp_seconds", "vantage_probes_skipped_total",
                 "vantage_probes_started_total"):
        assert value(m, name, target="api") == 0, name
    assert value(m, "vantage_target_info", target="api", url="http://127.0.0.1:1/",
                 module="http_2xx", team="payments") == 1
    assert value(m, "vantage_targets") == 2
    # the histogram appears only when an outcome first happens
    assert "vantage_probe_duration_seconds_bucket" not in m.render().decode()


def test_probe_results_are_counted_exactly() -> None:
    m = fresh()
    for outcome, duration in ((Outcome.SUCCESS, 0.2), (Outcome.SUCCESS, 0.02),
                              (Outcome.TIMEOUT, 5.0)):
        m.probe_started("api")
        m.probe_finished("api", result(outcome, duration))
    assert value(m, "vantage_probes_total", target="api", outcome="success") == 2
    assert value(m, "vantage_probes_total", target="api", outcome="timeout") == 1
    assert value(m, "vantage_probes_started_total", target="api") == 3
    assert value(m, "vantage_probe_success", target="api") == 0
    assert value(m, "vantage_probe_last_outcome", target="api", outcome="timeout") == 1
    assert value(m, "vantage_probe_last_outcome", target="api", outcome="success") == 0
    assert value(m, "vantage_probe_duration_seconds_bucket", target="api", outcome="success",
                 le="0.025") == 1
    assert value(m, "vantage_probe_duration_seconds_bucket", target="api", outcome="success",
                 le="0.25") == 2
    assert value(m, "vantage_probe_duration_seconds_bucket", target="api", outcome="success",
                 le="+Inf") == 2
    assert value(m, "vantage_probe_duration_seconds_sum", target="api",
                 outcome="success") == pytest.approx(0.22)
    assert value(m, "vantage_probe_duration_seconds_count", target="api", outcome="timeout") == 1
    assert value(m, "vantage_probe_phase_duration_seconds", target="api", phase="processing") \
        == pytest.approx(0.1)
    assert value(m, "vantage_probe_tls_cert_expiry_timestamp_seconds", target="api") == 1.9e9
    assert value(m, "vantage_probes_in_flight") == 0
    assert (value(m, "vantage_probe_last_run_timestamp_seconds", target="api") or 0) > 1.7e9


def test_skips_cancels_and_lag() -> None:
    m = fresh()
    m.probe_skipped("api")
    m.probe_skipped("api")
    m.probe_started("api")
    assert value(m, "vantage_probes_in_flight") == 1
    m.probe_cancelled("api")
    m.observe_lag(0.003)
    assert value(m, "vantage_probes_skipped_total", target="api") == 2
    assert value(m, "vantage_probes_cancelled_total", target="api") == 1
    assert value(m, "vantage_probes_in_flight") == 0
    assert value(m, "vantage_scheduler_lag_seconds_bucket", le="0.0025") == 0
    assert value(m, "vantage_scheduler_lag_seconds_bucket", le="0.005") == 1
    assert value(m, "vantage_scheduler_lag_seconds_count") == 1


def test_removed_targets_vanish_and_kept_ones_keep_counts() -> None:
    m = fresh()
    m.probe_started("api")
    m.probe_finished("api", result(Outcome.SUCCESS))
    m.set_targets(load_config_text("targets: [{name: api, url: 'http://127.0.0.1:9/'}]").targets)
    text = m.render().decode()
    assert "escapes" not in text
    assert value(text, "vantage_probes_total", target="api", outcome="success") == 1
    assert value(text, "vantage_target_info", target="api", url="http://127.0.0.1:9/",
                 module="http_2xx") == 1
    assert value(text, "vantage_targets") == 1


def test_no_created_series_and_build_info() -> None:
    text = fresh().render().decode()
    assert "_created" not in text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"vantage_build_info", "vantage_shard_info", "process_cpu_seconds",
            "python_info"} <= families


def test_escaped_label_values_round_trip() -> None:
    m = fresh()
    name = 'odd "name" \\ with\\nescapes'  # quote, backslash, and a literal backslash-n
    assert value(m, "vantage_probes_total", target=name, outcome="crash") == 0
    newline = dataclasses.replace(load_config_text(CONFIG).targets[0], name="two\nlines")
    m.set_targets([newline])
    assert 'target="two\\nlines"' in m.render().decode()
    assert value(m, "vantage_probes_total", target="two\nlines", outcome="crash") == 0


def test_openmetrics_parses_and_ends_with_eof() -> None:
    m = fresh()
    m.probe_started("api")
    m.probe_finished("api", result(Outcome.SUCCESS))
    text = m.render(openmetrics_format=True).decode()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1
    fams = {f.name: f for f in om_parse(text)}
    assert fams["vantage_probes"].type == "counter"
    assert fams["vantage_probe_duration_seconds"].type == "histogram"


def test_buckets_change_resets_histograms() -> None:
    m = fresh()
    m.probe_started("api")
    m.probe_finished("api", result(Outcome.SUCCESS))
    m.set_targets(load_config_text(CONFIG).targets, buckets=(0.1, 1.0))
    assert "vantage_probe_duration_seconds_bucket" not in m.render().decode()
    m.probe_started("api")
    m.probe_finished("api", result(Outcome.SUCCESS, 0.5))
    assert value(m, "vantage_probe_duration_seconds_bucket", target="api", outcome="success",
                 le="1.0") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_reports_nothing() -> None:
    m = fresh()
    for o in OUTCOMES:
        m.probe_started("api")
        m.probe_finished("api", result(o))
    m.probe_skipped("api")
    m.observe_lag(0.01)
    proc = subprocess.run(["promtool", "check", "metrics"], input=m.render(), capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == ""
    assert proc.stderr.decode().strip() == ""
