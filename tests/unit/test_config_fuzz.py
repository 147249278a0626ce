"""Fuzzing the loader: whatever the document, it returns a Config or raises ConfigError."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, load_config_text

KEYS = ["global", "modules", "targets", "interval", "timeout", "max_concurrency", "buckets",
        "http", "kind", "name", "url", "module", "labels", "valid_status_codes", "headers",
        "tls", "ca_file", "basic_auth", "username", "password_file", "method", "max_body_bytes",
        "fail_if_body_matches_regexp", "fail_if_header_matches", "header", "regexp",
        "follow_redirects", "max_redirects", "bearer_token_file", "unknown", "http_2xx"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["15s", "500ms", "1m30s", "0s", "2xx", "200-299", "1MiB", "http://a/",
                     "https://127.0.0.1:1/", "${HOME}", "${NOPE_UNSET}", "((", "GET", "icmp",
                     "/dev/null", "/nonexistent"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children,
                        max_size=6)),
    max_leaves=40,
)


def dump(doc: object) -> str:
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def check(text: str) -> None:
    try:
        result = load_config_text(text)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert isinstance(result, Config)
        return
    assert message  # a ConfigError always explains itself


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents(doc: object) -> None:
    check(dump(doc))


@settings(max_examples=1000, deadline=None)
@given(st.fixed_dictionaries({
    "global": st.dictionaries(st.sampled_from(KEYS[3:7]), scalars, max_size=4),
    "targets": st.lists(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=6), max_size=4),
}))
def test_schema_shaped_documents(doc: object) -> None:
    check(dump(doc))


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:-,'\"\n #&*!|>%@`abc\t0129")), max_size=80))
def test_raw_text(text: str) -> None:
    check(text)


def test_deep_nesting_and_huge_numbers() -> None:
    check("targets: " + "[" * 5000 + "]" * 5000)
    check("global: {max_concurrency: " + "9" * 5000 + "}")
    check("a: &a [*a]")  # a recursive alias
    check("global: {interval: 2024-13-45}")  # a broken timestamp
