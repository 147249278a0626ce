"""Config loading: valid files become frozen configs; each invalid fixture gives its message."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from exporter.config import (
    ConfigError,
    format_duration,
    json_schema,
    load_config,
    load_config_text,
    parse_duration,
    parse_size,
    parse_status_codes,
)

HERE = Path(__file__).parent / "configs"
INVALID = sorted((HERE / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_reports_file_line_path_message(path: Path) -> None:
    expected = re.findall(r"^# expect: (.*)$", path.read_text(), re.MULTILINE)
    assert expected, f"{path} has no '# expect:' line"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    for line in expected:
        assert f"{path}:{line}" in text, f"\nwant: {path}:{line}\ngot:  {text}"
    # every problem is reported, one line each, in file order
    assert len(err.value.problems) == len(text.splitlines())
    assert [p.line for p in err.value.problems] == sorted(p.line for p in err.value.problems)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(HERE / "invalid" / "many_problems.yaml")
    assert len(err.value.problems) == 3


def test_full_valid_config_merges_target_over_module() -> None:
    cfg = load_config(HERE / "valid" / "full.yaml")
    assert (cfg.interval, cfg.timeout, cfg.max_concurrency) == (30.0, 5.0, 64)
    assert cfg.buckets == (0.01, 0.1, 1.0, 10.0)
    checkout, default = cfg.targets
    assert checkout.name == "checkout-api"
    assert (checkout.interval, checkout.timeout) == (10.0, 2.0)
    assert checkout.http.method == "POST"  # from the module
    assert checkout.http.valid_status_codes == ((200, 200), (204, 204))  # target override
    assert checkout.http.tls.insecure_skip_verify is True  # target override...
    assert checkout.http.tls.server_name == "api.internal"  # ...merged over the module's tls
    assert checkout.http.max_body_bytes == 64 * 1024
    assert checkout.labels == (("env", "prod"), ("team", "payments"))
    # a target without a name is named by its url; the file redefines http_2xx
    assert default.name == "http://127.0.0.1:8080/"
    assert default.http.valid_status_codes == ((200, 299), (301, 301))
    assert default.interval == 30.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        checkout.url = "x"  # type: ignore[misc]


def test_secrets_from_files_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    (tmp_path / "token").write_text("tok\n")
    monkeypatch.setenv("VANTAGE_TEST_KEY", "k1")
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"targets": [{
        "url": "http://a/", "http": {
            "basic_auth": {"username": "u", "password_file": "pw"},  # relative to the file
            "bearer_token_file": str(tmp_path / "token"),
            "headers": {"X-Key": "${VANTAGE_TEST_KEY}-suffix"}}}]}))
    t = load_config(tmp_path / "v.yaml").targets[0]
    assert t.http.basic_auth is not None
    assert (t.http.basic_auth.username, t.http.basic_auth.password) == ("u", "hunter2")
    assert t.http.bearer_token == "tok"
    assert t.http.headers == (("X-Key", "k1-suffix"),)
    assert "hunter2" not in repr(t)  # secrets stay out of reprs and logs
    assert "tok'" not in repr(t)


def test_secrets_and_env_values_cannot_inject_headers(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A request header is written verbatim: a line break would start a header of its own.
    (tmp_path / "token").write_text("tok\nX-Evil: 1\n")
    monkeypatch.setenv("VANTAGE_TEST_KEY", "k1\r\nHost: evil.example")
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"targets": [{
        "url": "http://a/", "http": {
            "bearer_token_file": str(tmp_path / "token"),
            "headers": {"X-Key": "${VANTAGE_TEST_KEY}"}}}]}))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "v.yaml")
    text = str(err.value)
    assert "bearer token: value contains a line break or NUL character" in text
    assert "header X-Key: value contains a line break or NUL character" in text


def test_empty_file_is_a_valid_config_with_no_targets() -> None:
    cfg = load_config_text("")
    assert cfg.targets == ()
    assert [m.name for m in cfg.modules] == ["http_2xx"]


def test_unchanged_definitions_compare_equal_across_loads() -> None:
    text = (HERE / "valid" / "full.yaml").read_text()
    assert load_config_text(text).targets == load_config_text(text).targets


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("15s", 15), ("1m30s", 90), ("2h", 7200), ("1d", 86400),
    ("1h1m1s1ms", 3661.001),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "1.5s", "s", "15 s", "-1s", "1s1m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for s in (0.5, 15, 90, 7200, 3661.001):
        assert parse_duration(format_duration(s)) == pytest.approx(s)


@pytest.mark.parametrize(("value", "size"), [
    (1000, 1000), ("64KiB", 65536), ("1MiB", 1048576), ("10KB", 10000), ("2GiB", 2 * 1024**3)])
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(("value", "rng"), [
    (200, (200, 200)), ("2xx", (200, 299)), ("200-299", (200, 299)), ("404", (404, 404))])
def test_status_codes(value: object, rng: tuple[int, int]) -> None:
    assert parse_status_codes(value) == rng


def test_json_schema_accepts_valid_and_rejects_unknown_keys() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = yaml.safe_load((HERE / "valid" / "full.yaml").read_text())
    jsonschema.validate(doc, schema)
    doc["targets"][0]["timout"] = "1s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    json.dumps(schema)  # serialisable for `vantage-exporter schema`
