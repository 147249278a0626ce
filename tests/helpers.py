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
