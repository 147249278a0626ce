"""Shared test helpers: read exposition text back as numbers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import Metrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics | str, name: str, **labels: str) -> float | None:
    text = metrics if isinstance(metrics, str) else metrics.render().decode()
    return samples(text).get((name, frozenset(labels.items())))


def target_yaml(name: str, url: str, **extra: object) -> str:
    import yaml

    return yaml.safe_dump({"targets": [{"name": name, "url": url, **extra}]})


def exported_sample_names() -> frozenset[str]:
    """Every sample name the exporter emits (a target after one probe of each outcome, plus
    the process collectors): what dashboards and alert rules may refer to."""
    from exporter.config import load_config_text
    from exporter.outcome import OUTCOMES, ProbeResult

    metrics = Metrics()
    (target,) = load_config_text("targets: [{name: t, url: 'http://127.0.0.1/'}]").targets
    metrics.set_targets([target])
    for outcome in OUTCOMES:
        metrics.probe_started("t")
        metrics.probe_finished("t", ProbeResult(outcome, 0.1))
    metrics.observe_lag(0.001)
    return frozenset(name for name, _ in samples(metrics.render().decode()))
