"""Reload, shutdown and crash isolation against the real daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from exporter.config import Target
from exporter.daemon import Daemon, Options
from exporter.outcome import ProbeResult
from exporter.probes.http import HTTPProber
from exporter.scheduler import grid_offset, next_slot
from tests.daemon_proc import DaemonProcess, free_port
from tests.faults import FaultServers
from tests.helpers import value


def config(faults: FaultServers, *names: str, interval: str = "1s", timeout: str = "500ms",
           extra: str = "") -> str:
    lines = [f"  - {{name: {n}, url: '{faults.url('/ok')}?{n}', interval: {interval}, "
             f"timeout: {timeout}}}" for n in names]
    return "targets:\n" + "\n".join(lines) + "\n" + extra


async def next_runs(d: DaemonProcess) -> dict[str, float]:
    _, body = await d.get("/api/v1/targets")
    return {t["name"]: t["next_run"] for t in json.loads(body)["targets"]}


async def wait_log(d: DaemonProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{d.log()[-3000:]}")
        await asyncio.sleep(0.05)


async def test_sighup_reload_semantics(tmp_path: Path, faults: FaultServers) -> None:
    async with DaemonProcess(tmp_path, config(faults, "keep", "change", "drop")) as d:
        await d.wait_for("vantage_probes_started_total", lambda v: v and v >= 2, target="keep")
        phase_before = (await next_runs(d))["keep"] % 1.0
        assert d.config_path is not None
        d.config_path.write_text(
            config(faults, "keep", "new")
            + f"  - {{name: change, url: '{faults.url('/status/503')}', interval: 1s, "
              "timeout: 500ms}\n")
        started_before = await d.value("vantage_probes_started_total", target="keep") or 0
        d.signal(signal.SIGHUP)
        await d.wait_for("vantage_target_info", lambda v: v == 1, target="new",
                         url=faults.url("/ok") + "?new", module="http_2xx")
        m = await d.metrics()
        names = {dict(k[1]).get("target") for k in m}
        assert "drop" not in names  # removed target: every series gone
        assert m[("vantage_targets", frozenset())] == 3
        # unchanged target: series continue (not reset) and phase is kept
        assert m[("vantage_probes_started_total", frozenset({("target", "keep")}))] >= \
            started_before
        assert (await next_runs(d))["keep"] % 1.0 == pytest.approx(phase_before, abs=1e-6)
        # changed target: restarted with its new definition
        await d.wait_for("vantage_probe_last_outcome", lambda v: v == 1, target="change",
                         outcome="http_error")
        assert await d.value("vantage_config_last_reload_successful") == 1
    d.assert_clean_log()


async def test_invalid_reload_changes_nothing(tmp_path: Path, faults: FaultServers) -> None:
    async with DaemonProcess(tmp_path, config(faults, "a", "b")) as d:
        ok_at = await d.value("vantage_config_last_reload_success_timestamp_seconds")
        assert d.config_path is not None
        d.config_path.write_text(config(faults, "a") + "  - {name: c, url: 'ftp://x'}\n"
                                 "global: {interval: soon}\n")
        d.signal(signal.SIGHUP)
        await d.wait_for("vantage_config_last_reload_successful", lambda v: v == 0)
        await wait_log(d, "keeping the running one")
        log = d.log()
        assert "targets[1].url: 'ftp://x' must start with http://" in log
        assert "global.interval: 'soon' is not a duration" in log  # every problem is logged
        assert await d.value("vantage_targets") == 2
        started = await d.value("vantage_probes_started_total", target="b") or 0
        await d.wait_for("vantage_probes_started_total", lambda v: v and v > started, target="b")
        assert await d.value("vantage_config_last_reload_success_timestamp_seconds") == ok_at


async def test_http_reload_needs_lifecycle_flag(tmp_path: Path, faults: FaultServers) -> None:
    async with DaemonProcess(tmp_path, config(faults, "a")) as d:
        status, text = await d.post("/-/reload")
        assert status == 403
        assert "--web.enable-lifecycle" in text


async def test_http_reload_200_and_400(tmp_path: Path, faults: FaultServers) -> None:
    async with DaemonProcess(tmp_path, config(faults, "a"), "--web.enable-lifecycle") as d:
        assert d.config_path is not None
        d.config_path.write_text(config(faults, "a", "b"))
        status, text = await d.post("/-/reload")
        assert (status, text.strip()) == (200, "config reloaded: 2 targets in this shard")
        assert await d.value("vantage_targets") == 2
        d.config_path.write_text(config(faults, "a", "b") + "  - {name: a, url: 'http://x/'}\n")
        status, text = await d.post("/-/reload")
        assert status == 400
        assert f"{d.config_path}:4: targets[2].name: duplicate target name 'a'" in text
        assert await d.value("vantage_config_last_reload_successful") == 0
        assert await d.value("vantage_targets") == 2
        assert (await d.get("/-/reload"))[0] == 405


async def test_watch_sees_in_place_write(tmp_path: Path, faults: FaultServers) -> None:
    async with DaemonProcess(tmp_path, config(faults, "a"), "--config.watch") as d:
        assert d.config_path is not None
        with d.config_path.open("w") as f:  # in place: same inode
            f.write(config(faults, "a", "b"))
        await d.wait_for("vantage_targets", lambda v: v == 2, timeout=10)
    d.assert_clean_log()


async def test_watch_sees_configmap_symlink_swap(tmp_path: Path, faults: FaultServers) -> None:
    """The exact sequence kubelet uses: write a new timestamped dir, point ..data_tmp at it,
    rename ..data_tmp over ..data (atomic), remove the old dir. The file itself is a symlink
    through ..data, so its inode never changes."""
    mount = tmp_path / "configmap"
    mount.mkdir()
    v1 = mount / "..2026_11_23_10_00_00.000000001"
    v1.mkdir()
    (v1 / "vantage.yaml").write_text(config(faults, "a"))
    os.symlink(v1.name, mount / "..data")
    os.symlink("..data/vantage.yaml", mount / "vantage.yaml")
    d = DaemonProcess(tmp_path, None, "--config", str(mount / "vantage.yaml"), "--config.watch")
    async with d:
        assert await d.value("vantage_targets") == 1
        v2 = mount / "..2026_11_23_10_01_00.000000002"
        v2.mkdir()
        (v2 / "vantage.yaml").write_text(config(faults, "a", "b", "c"))
        os.symlink(v2.name, mount / "..data_tmp")
        os.rename(mount / "..data_tmp", mount / "..data")
        (v1 / "vantage.yaml").unlink()
        v1.rmdir()
        await d.wait_for("vantage_targets", lambda v: v == 3, timeout=10)
        await wait_log(d, "changed, reloading")
    d.assert_clean_log()


def soon_starting_name(interval: float, within: tuple[float, float] = (1.0, 2.5)) -> str:
    """A target name whose first grid slot comes 1-2.5 s from now (offsets hash the name)."""
    now = time.time()
    for i in range(10_000):
        name = f"slow-{i}"
        wait = next_slot(now, grid_offset(name, interval), interval) - now
        if within[0] <= wait <= within[1]:
            return name
    raise AssertionError("no name found")


def slow_config(faults: FaultServers) -> str:
    name = soon_starting_name(30.0)
    return (f"targets: [{{name: {name}, url: '{faults.url('/slow?s=20')}', interval: 30s, "
            "timeout: 25s}]\n")


async def test_shutdown_with_probe_in_flight(tmp_path: Path, faults: FaultServers) -> None:
    cfg = slow_config(faults)
    async with DaemonProcess(tmp_path, cfg, "--shutdown-grace", "2s") as d:
        await d.wait_for("vantage_probes_in_flight", lambda v: v == 1, timeout=35)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        # readiness drops at once, while in-flight probes get their grace
        status = 200
        for _ in range(50):
            try:
                status, _ = await d.get("/-/ready")
            except Exception:
                break
            if status == 503:
                break
            await asyncio.sleep(0.02)
        assert status == 503
        code = await d.wait_exit(10)
        elapsed = time.monotonic() - t0
        assert code == 0
        assert elapsed < 2 + 1.0, f"took {elapsed:.2f}s for a 2s grace"
        assert elapsed > 1.5, "in-flight probe did not get its grace"
    d.assert_clean_log()
    assert "shutting down: no new probes, 1 in flight" in d.log()


async def test_second_signal_exits_at_once(tmp_path: Path, faults: FaultServers) -> None:
    cfg = slow_config(faults)
    async with DaemonProcess(tmp_path, cfg, "--shutdown-grace", "20s") as d:
        await d.wait_for("vantage_probes_in_flight", lambda v: v == 1, timeout=35)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        d.signal(signal.SIGTERM)
        assert await d.wait_exit(10) == 0
        assert time.monotonic() - t0 < 3
    d.assert_clean_log()
    assert "second signal" in d.log()


async def test_crash_isolation_in_the_daemon(tmp_path: Path, faults: FaultServers,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A probe that raises keeps being probed and counted as crash; its neighbours run on;
    repeat tracebacks are rate-limited."""
    path = tmp_path / "v.yaml"
    path.write_text(config(faults, "good1", "bad", "good2", interval="200ms", timeout="150ms"))
    prober = HTTPProber()

    async def probe(target: Target) -> ProbeResult:
        if target.name == "bad":
            raise RuntimeError("injected bug")
        return await prober.probe(target)

    daemon = Daemon(Options(config_path=str(path), host="127.0.0.1", port=free_port()), probe)
    async with prober:
        with caplog.at_level(logging.INFO):
            run = asyncio.create_task(daemon.run())
            await asyncio.sleep(1.5)
            m = daemon.metrics
            daemon.request_stop()
            assert await run == 0
    assert (value(m, "vantage_probes_total", target="bad", outcome="crash") or 0) >= 4
    for good in ("good1", "good2"):
        assert (value(m, "vantage_probes_total", target=good, outcome="success") or 0) >= 4
        assert value(m, "vantage_probes_total", target=good, outcome="crash") == 0
    crash_lines = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash_lines) == 1
    assert "RuntimeError: injected bug" in crash_lines[0].getMessage()
