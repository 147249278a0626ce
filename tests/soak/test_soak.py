"""Soak: a few hundred targets at 1-2 s against every misbehaviour, plus reloads every few
seconds. Asserts conservation at every scrape, flat RSS, fds and tasks, and a clean log.

CI runs it for 75 s; ``pytest tests/soak --soak-seconds 1800`` runs it for 30 minutes and
prints the figures (RSS, fds, tasks over time) for the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from exporter.outcome import OUTCOMES
from tests.daemon_proc import DaemonProcess, free_port

pytestmark = pytest.mark.soak

N_TARGETS = 300


def fault_urls(ports: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    base = f"http://127.0.0.1:{ports['port']}"
    tls = f"https://localhost:{ports['tls_port']}"
    return [
        (f"{base}/ok", {}),
        (f"{base}/slow?s=5", {}),
        (f"{base}/drip", {}),
        (f"{base}/reset", {}),
        (f"{base}/big", {"max_body_bytes": "64KiB"}),
        (f"{base}/bomb", {"max_body_bytes": "1MiB"}),
        (f"{base}/redirect-loop", {}),
        (f"{base}/huge-headers", {}),
        (f"{base}/status/503", {}),
        (f"{base}/body?text=down", {"fail_if_body_not_matches_regexp": ["up"]}),
        (f"http://127.0.0.1:{ports['garbage_port']}/", {}),
        (f"http://127.0.0.1:{free_port()}/", {}),  # refused
        (f"{tls}/ok", {}),  # self-signed to us: tls_error
        (f"{tls}/ok", {"tls": {"ca_file": ports["ca_file"]}}),
    ]


def make_config(ports: dict[str, object], generation: int) -> str:
    urls = fault_urls(ports)
    targets = []
    for i in range(N_TARGETS):
        if generation % 2 and i % 10 == 0:
            continue  # every other generation drops 10% of the targets...
        url, http = urls[i % len(urls)]
        interval = "1s" if i % 2 else "2s"
        if generation % 3 == 1 and i % 10 == 5:
            interval = "1500ms"  # ...and changes another 10%
        t: dict[str, object] = {"name": f"t{i:04d}", "url": url, "interval": interval,
                                "timeout": "800ms"}
        if http:
            t["http"] = http
        targets.append(t)
    return json.dumps({"global": {"max_concurrency": 512}, "targets": targets})  # JSON is YAML


def proc_figures(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds


def check_conservation(m: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (name, labels), v in m.items():
        lab = dict(labels)
        if name == "vantage_probes_total":
            per[lab["target"]]["finished"] += v
        elif name in ("vantage_probes_started_total", "vantage_probes_cancelled_total"):
            per[lab["target"]][name] += v
    in_flight_sum = 0.0
    for target, c in per.items():
        open_ = (c["vantage_probes_started_total"] - c["finished"]
                 - c["vantage_probes_cancelled_total"])
        assert open_ in (0, 1), f"{target}: started {c}, {open_} unaccounted"
        in_flight_sum += open_
    assert in_flight_sum == m[("vantage_probes_in_flight", frozenset())]


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--soak-seconds"))


async def test_soak(tmp_path: Path, soak_seconds: float) -> None:
    port_file = tmp_path / "ports.json"
    faults = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.faults", "--port-file", str(port_file),
        cwd=Path(__file__).parents[2], stdin=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.05)
        ports = json.loads(port_file.read_text())
        async with DaemonProcess(tmp_path, make_config(ports, 0), "--web.enable-lifecycle",
                                 dev_mode=False) as d:
            assert d.proc is not None
            pid = d.proc.pid
            rows: list[tuple[float, int, int, float, float]] = []
            start = time.monotonic()
            generation = 0
            next_reload = start + 3
            outcomes_seen: set[str] = set()
            while (now := time.monotonic()) - start < soak_seconds:
                if now >= next_reload:
                    generation += 1
                    assert d.config_path is not None
                    if generation % 5 == 0:  # an invalid file now and then: nothing changes
                        d.config_path.write_text("targets: [{url: 'ftp://nope'}]")
                        status, _ = await d.post("/-/reload")
                        assert status == 400
                    else:
                        d.config_path.write_text(make_config(ports, generation))
                        if generation % 2:
                            d.signal(signal.SIGHUP)
                        else:
                            status, text = await d.post("/-/reload")
                            assert status == 200, text
                    next_reload = now + 3
                m = await d.metrics()
                check_conservation(m)
                for (name, labels), v in m.items():
                    if name == "vantage_probes_total" and v > 0:
                        outcomes_seen.add(dict(labels)["outcome"])
                rss, fds = proc_figures(pid)
                rows.append((now - start, rss, fds, m[("vantage_asyncio_tasks", frozenset())],
                             m[("vantage_probes_in_flight", frozenset())]))
                await asyncio.sleep(1.0)
            warm = [r for r in rows if r[0] >= soak_seconds * 0.4]
            assert len(warm) >= 5
            print_figures(rows)
            # RSS moves with what is in flight (bodies being read, TLS buffers): a leak is a
            # trend, so compare the first and last thirds of the warm window, not two samples.
            third = max(2, len(warm) // 3)
            early = statistics.median(r[1] for r in warm[:third])
            late = statistics.median(r[1] for r in warm[-third:])
            assert late < early * 1.10, f"RSS grew >10% after warm-up: {early} -> {late} KiB"
            assert max(r[1] for r in warm) < max(r[1] for r in warm[:third]) * 1.20, \
                "RSS peaked >20% above its warm-up peak"
            # tasks: one per in-flight probe plus a constant (both read in the same render)
            for _, _, _, tasks, in_flight in warm:
                assert tasks <= in_flight + 20, (tasks, in_flight)
            # fds: one socket per in-flight probe plus a constant, and no growth over time
            peak_in_flight = max(r[4] for r in rows)
            assert max(r[2] for r in warm) <= 60 + 2 * peak_in_flight
            half = len(warm) // 2
            assert max(r[2] for r in warm[half:]) <= max(r[2] for r in warm[:half]) + 25
            assert {o.value for o in OUTCOMES} - outcomes_seen <= {"crash", "dns_error"}
        assert d.proc.returncode == 0
        d.assert_clean_log()
    finally:
        if faults.returncode is None:
            faults.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(faults.wait(), 10)
            except TimeoutError:
                faults.kill()
                await faults.wait()


def print_figures(rows: list[tuple[float, int, int, float, float]]) -> None:
    print("\nsoak figures: t(s)  rss(MiB)  fds  tasks  in_flight")
    step = max(1, len(rows) // 20)
    for t, rss, fds, tasks, in_flight in rows[::step]:
        print(f"  {t:7.0f}  {rss / 1024:8.1f}  {fds:4d}  {tasks:5.0f}  {in_flight:5.0f}")
