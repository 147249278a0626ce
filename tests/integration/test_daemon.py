"""The real daemon process: demo mode, CLI subcommands, endpoints, startup errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.daemon_proc import DaemonProcess, free_port
from tests.faults import FaultServers

DEMO_EXPECTED = {"demo-ok": "success", "demo-slow": "timeout", "demo-unavailable": "http_error",
                 "demo-wrong-body": "validation_error", "demo-refused": "connect_error",
                 "demo-unresolvable": "dns_error"}


async def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_demo_mode_shows_several_outcome_classes(tmp_path: Path) -> None:
    async with DaemonProcess(tmp_path, None) as d:
        for target, outcome in DEMO_EXPECTED.items():
            await d.wait_for("vantage_probe_last_outcome", lambda v: v == 1, timeout=20,
                             target=target, outcome=outcome)
        status, page = await d.get("/")
        assert status == 200
        assert "Demo mode" in page
        for target, outcome in DEMO_EXPECTED.items():
            assert target in page
            assert outcome in page
        status, body = await d.get("/api/v1/targets")
        doc = json.loads(body)
        assert doc["demo"] is True
        by_name = {t["name"]: t for t in doc["targets"]}
        assert by_name["demo-unavailable"]["last"]["status_code"] == 503
        assert "503" in by_name["demo-unavailable"]["last"]["error"]
        assert by_name["demo-slow"]["last"]["error"].startswith("deadline of 1s passed")
        assert "demo mode" in d.log()
    assert d.proc is not None
    assert d.proc.returncode == 0
    d.assert_clean_log()


async def test_metrics_endpoint_formats(tmp_path: Path, faults: FaultServers) -> None:
    config = f"targets: [{{name: ok, url: '{faults.url('/ok')}', interval: 1s, timeout: 500ms}}]"
    async with DaemonProcess(tmp_path, config) as d:
        await d.wait_for("vantage_probes_total", lambda v: v and v >= 1, target="ok",
                         outcome="success")
        assert d.session is not None
        async with d.session.get(d.url + "/metrics", headers={
                "Accept": "application/openmetrics-text; version=1.0.0",
                "Accept-Encoding": "gzip"}, auto_decompress=False) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            text = gzip.decompress(await r.read()).decode()
        assert text.endswith("# EOF\n")
        assert "# TYPE vantage_probes counter" in text
        async with d.session.get(d.url + "/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE vantage_probes_total counter" in await r.text()
        assert (await d.get("/-/healthy"))[0] == 200
        assert await d.value("vantage_config_last_reload_successful") == 1
        assert (await d.value("vantage_config_last_reload_success_timestamp_seconds") or 0) > 1e9
        assert await d.value("vantage_targets") == 1
    d.assert_clean_log()


async def test_bad_config_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, "targets:\n  - name: a\n    url: http://x/\n    timeout: 20s\n")
    await d.start(wait_ready=False)
    assert await d.wait_exit() == 2
    await d.close()
    assert f"{tmp_path / 'vantage.yaml'}:4: targets[0].timeout: 20s is not shorter" in d.log()


async def test_port_in_use_exits_1(tmp_path: Path) -> None:
    async with DaemonProcess(tmp_path, "targets: []") as first:
        second = DaemonProcess(tmp_path, "targets: []")
        second.port = first.port
        await second.start(wait_ready=False)
        assert await second.wait_exit() == 1
        await second.close()
        assert "cannot listen" in second.log()


async def test_default_config_file_in_cwd_is_used(tmp_path: Path, faults: FaultServers) -> None:
    (tmp_path / "vantage.yaml").write_text(
        f"targets: [{{name: from-cwd, url: '{faults.url('/ok')}'}}]")
    d = DaemonProcess(tmp_path, None)
    async with d:
        assert await d.value("vantage_target_info", target="from-cwd", url=faults.url("/ok"),
                             module="http_2xx") == 1


async def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("targets: [{url: 'http://127.0.0.1/'}]")
    code, out, _ = await cli("check-config", str(good))
    assert code == 0
    assert "valid, 1 targets" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("global:\n  intreval: 15s\ntargets:\n  - url: ftp://x\n")
    code, _, err = await cli("check-config", str(bad))
    assert code == 2
    assert f"{bad}:2: global.intreval: unknown key" in err
    assert f"{bad}:4: targets[0].url: 'ftp://x' must start with http://" in err
    code, _, err = await cli("check-config", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "cannot read" in err


async def test_probe_cli_explains_outcomes(faults: FaultServers, tmp_path: Path) -> None:
    code, out, _ = await cli("probe", faults.url("/ok"))
    assert code == 0
    assert "outcome:  success" in out
    assert "status:   200" in out
    assert "phases:   resolve" in out
    code, out, _ = await cli("probe", faults.url("/status/503"))
    assert code == 1
    assert "outcome:  http_error" in out
    assert "503" in out
    code, out, _ = await cli("probe", faults.url("/slow?s=5"), "--timeout", "300ms")
    assert code == 1
    assert "outcome:  timeout" in out
    assert "deadline of 300ms passed during processing" in out
    config = tmp_path / "m.yaml"
    config.write_text(f"modules: {{tls_ca: {{http: {{tls: {{ca_file: '{faults.ca_file}'}}}}}}}}")
    code, out, _ = await cli("probe", faults.tls_url("/ok"), "--config", str(config),
                             "--module", "tls_ca")
    assert code == 0, out
    assert "tls:      certificate expires" in out
    code, out, _ = await cli("probe", faults.tls_url("/ok"))
    assert code == 1
    assert "tls_error" in out
    code, _, err = await cli("probe", "ftp://x")
    assert code == 2
    assert "must start with http://" in err
    code, _, err = await cli("probe", "http://exa mple.com/")  # a URL no probe can send
    assert code == 2
    assert "whitespace" in err
    code, _, err = await cli("probe")
    assert code == 2
    assert "usage" in err


async def test_schema_cli() -> None:
    code, out, _ = await cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert set(schema["properties"]) == {"global", "modules", "targets"}


async def test_unknown_flag_exits_2() -> None:
    code, _, err = await cli("--no-such-flag")
    assert code == 2
    assert "unrecognized arguments" in err


async def test_sharded_instance_probes_only_its_share(tmp_path: Path) -> None:
    names = [f"svc-{i}" for i in range(20)]
    config = "targets:\n" + "".join(f"  - {{name: {n}, url: 'http://127.0.0.1:9/{n}'}}\n"
                                    for n in names)
    seen: list[str] = []
    for index in range(3):
        async with DaemonProcess(tmp_path, config, "--shard", f"{index}/3") as d:
            m = await d.metrics()
            mine = [dict(k[1])["target"] for k in m if k[0] == "vantage_target_info"]
            assert m[("vantage_targets", frozenset())] == len(mine)
            assert m[("vantage_shard_info", frozenset({("index", str(index)),
                                                        ("count", "3")}))] == 1
            seen += mine
    assert sorted(seen) == sorted(names)


@pytest.mark.parametrize("env_shard", ["1/2"])
async def test_shard_from_env(tmp_path: Path, env_shard: str) -> None:
    async with DaemonProcess(tmp_path, "targets: []", env={"VANTAGE_SHARD": env_shard}) as d:
        assert await d.value("vantage_shard_info", index="1", count="2") == 1


async def test_unreachable_listen_host_reports(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, "targets: []")
    d.flags = ("--listen", f"203.0.113.1:{free_port()}")  # not an address of this machine
    await d.start(wait_ready=False)
    assert await d.wait_exit() == 1
    await d.close()
    assert "cannot listen" in d.log()


async def test_sigint_stops_cleanly(tmp_path: Path, faults: FaultServers) -> None:
    config = f"targets: [{{name: ok, url: '{faults.url('/ok')}', interval: 1s, timeout: 500ms}}]"
    async with DaemonProcess(tmp_path, config) as d:
        d.signal(signal.SIGINT)
        assert await d.wait_exit() == 0
    d.assert_clean_log()


async def test_json_logs_one_object_per_line(tmp_path: Path, faults: FaultServers) -> None:
    cfg = (f"targets: [{{name: flaky, url: '{faults.url('/status/503')}', interval: 1s, "
           "timeout: 500ms}]")
    async with DaemonProcess(tmp_path, cfg, "--log-format", "json") as d:
        await d.wait_for("vantage_probes_total", lambda v: v and v >= 1, target="flaky",
                         outcome="http_error")
        await asyncio.sleep(0.2)
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    transitions = [x for x in lines if x.get("target") == "flaky" and x["level"] == "warning"]
    assert len(transitions) == 1  # logged once on the change, not on every probe
    assert transitions[0]["outcome"] == "http_error"
    assert "503" in transitions[0]["msg"]
    per_probe = [x for x in lines if x["level"] == "debug" and x.get("target") == "flaky"]
    assert per_probe, "per-probe lines exist at debug level"
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
