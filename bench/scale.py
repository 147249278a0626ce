#!/usr/bin/env python3
"""Scale: 10,000 targets every 15 s in one vantage-exporter process, against a local nginx.

Measured over a window after a warm-up (one interval plus a margin), while a scraper fetches
``/metrics`` every ``--scrape-interval`` seconds as Prometheus would (OpenMetrics preferred,
gzip accepted):

- scheduler lag p50/p99/max, twice:
  * from the exporter's own ``vantage_scheduler_lag_seconds`` histogram (the difference between
    the window's first and last scrape; quantiles interpolated as histogram_quantile does, the
    maximum known only to its bucket);
  * independently, from nginx's access log: every target has its own path ``/t/<i>`` and
    nginx logs ``$msec $request_uri``; DESIGN.md's grid says target ``t`` starts at
    ``offset(t) + k * interval`` with ``offset = blake2b-64(name) / 2**64 * interval``, so
    ``arrival - grid slot`` is the lag plus the time to connect and send the request
    (an upper bound on the lag, at 1 ms resolution);
- event-loop stalls seen from outside: ``GET /-/healthy`` every 100 ms on a kept-alive
  connection, latency p50/p99/max;
- the largest lag while a scrape is being served: the worst nginx-log lag of probes due during
  a scrape, the worst ``/-/healthy`` latency during a scrape, and the worst lag bucket of any
  scrape-to-scrape window of the exporter's histogram;
- RSS of the exporter (max over the run), its CPU share, the time to load and schedule the
  config;
- ``/metrics`` render time and size: full GETs at the end of the run, text format, plain
  and gzip (median and max of ``--render-samples``).

Usage::

    python bench/scale.py                     # 10,000 targets, 15 s, 180 s window (~4 minutes)
    python bench/scale.py --targets 20000 --seconds 300
    python bench/scale.py --smoke             # 200 targets, ~20 s, no thresholds
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_cost import (
    Nginx,
    cpu_seconds,
    free_port,
    http_get,
    rss_bytes,
    start_exporter,
    stop_process,
    sum_samples,
)

# Targets from issue 6.
TARGET_LAG_P99 = 0.020
TARGET_RSS = 250 * 2**20
TARGET_RENDER = 0.3
TARGET_SCRAPE_LAG = 0.050

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
LAG = "vantage_scheduler_lag_seconds"
EARLY = 0.005


def grid_offset(name: str, interval: float) -> float:
    """DESIGN.md's grid offset, recomputed here so the check is independent of the code."""
    h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    return h / 2**64 * interval


def runqueue_wait(pid: int) -> float:
    """Seconds the process' main thread (the event loop) spent runnable but waiting for a CPU:
    on a busy machine, lag that is not the exporter's doing."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def quantile(q: float, values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- the exporter's lag histogram --------------------------------------------------------------


def lag_buckets(text: str) -> dict[float, float]:
    """Cumulative ``le -> count`` of the lag histogram in an exposition."""
    out: dict[float, float] = {}
    prefix = f'{LAG}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, value = line[len(prefix):].split('"} ')
            out[float(le)] = float(value.split()[0])
    return out


def delta(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    return {le: b[le] - a.get(le, 0.0) for le in b}


def hist_quantile(q: float, cum: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    les = sorted(cum)
    total = cum[les[-1]] if les else 0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for le in les:
        if cum[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cum[le] - below, 1e-12)
        lower, below = le, cum[le]
    return lower


def hist_max_bucket(cum: dict[float, float]) -> str:
    """The bucket holding the largest observation: ``(lower, upper]``."""
    les = sorted(cum)
    prev_le, prev_n = 0.0, 0.0
    worst = "none"
    for le in les:
        if cum[le] > prev_n:
            worst = f"({prev_le:g}, {le:g}] s"
        prev_le, prev_n = le, cum[le]
    return worst


# -- load generators running beside the exporter ----------------------------------------------


@dataclass
class Probes:
    """What the harness threads record (wall-clock times)."""

    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency)
    scrapes: list[tuple[float, float, int, dict[float, float]]] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def pinger(port: int, stop: threading.Event, out: Probes, every: float = 0.1) -> None:
    conn: http.client.HTTPConnection | None = None
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            sent = time.time()
            t0 = time.perf_counter()
            conn.request("GET", "/-/healthy")
            resp = conn.getresponse()
            resp.read()
            out.pings.append((sent, time.perf_counter() - t0))
        except (OSError, http.client.HTTPException) as exc:
            out.errors.append(f"healthy: {exc!r}")
            if conn is not None:
                conn.close()
            conn = None
        next_at += every
        stop.wait(max(0.0, next_at - time.monotonic()))
    if conn is not None:
        conn.close()


def scraper(port: int, stop: threading.Event, out: Probes, every: float) -> None:
    """Scrape as Prometheus does; keep each scrape's (start, duration, bytes, lag buckets)."""
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            start = time.time()
            t0 = time.perf_counter()
            body = http_get(f"http://127.0.0.1:{port}/metrics",
                            {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
            took = time.perf_counter() - t0
            if body[:2] == b"\x1f\x8b":
                body_len, body = len(body), gzip.decompress(body)
            else:
                body_len = len(body)
            # only the lag histogram, found at C speed: parsing 30 MB of text here would
            # compete for the CPU with the exporter under test
            i = body.find(f"\n{LAG}_bucket".encode())
            j = body.find(f"\n{LAG}_count".encode(), i)
            hist = lag_buckets(body[i:j].decode()) if 0 <= i < j else {}
            out.scrapes.append((start, took, body_len, hist))
        except OSError as exc:
            out.errors.append(f"scrape: {exc!r}")
        next_at += every
        stop.wait(max(0.0, next_at - time.monotonic()))


def rss_sampler(pid: int, stop: threading.Event, out: Probes) -> None:
    while not stop.is_set():
        try:
            out.rss.append(rss_bytes(pid))
        except OSError:
            return
        stop.wait(1.0)


# -- analysis ---------------------------------------------------------------------------------


def nginx_lags(log: Path, interval: float, t0: float, t1: float) -> list[tuple[float, float]]:
    """(planned start, arrival - planned) for every probe that arrived in [t0, t1]."""
    offsets: dict[str, float] = {}
    out = []
    with log.open() as f:
        for line in f:
            msec, _, uri = line.rstrip("\n").partition(" ")
            if not uri.startswith("/t/"):
                continue
            at = float(msec)
            if not t0 <= at <= t1:
                continue
            name = "t" + uri[3:]
            off = offsets.get(name)
            if off is None:
                off = offsets[name] = grid_offset(name, interval)
            # nginx truncates $msec to the millisecond and timers may fire a hair early: an
            # arrival up to EARLY before its slot belongs to that slot (a lag of ~0)
            k = (at - off + EARLY) // interval
            planned = off + k * interval
            out.append((planned, at - planned))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def verdict(ok: bool, smoke: bool) -> str:
    return "" if smoke else ("  met" if ok else "  MISSED")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument("--timeout", type=float, default=5.0, help="probe timeout, seconds")
    p.add_argument("--max-concurrency", type=int, default=512)
    p.add_argument("--seconds", type=float, default=180.0, help="measured window")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds after ready before the window (default interval + 5)")
    p.add_argument("--scrape-interval", type=float, default=15.0)
    p.add_argument("--render-samples", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--smoke", action="store_true",
                   help="200 targets every 5 s for ~20 s, no thresholds")
    a = p.parse_args(argv)
    if a.smoke:
        a.targets, a.interval, a.timeout, a.seconds, a.warmup = 200, 5.0, 2.0, 10.0, 5.0
        a.scrape_interval, a.render_samples = 5.0, 2
    warmup = a.warmup if a.warmup is not None else a.interval + 5
    missing = [t for t in ("nginx",) if shutil.which(t) is None]
    if missing:
        print("missing: nginx (apt-get install nginx-light)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="vantage-scale-"))
    access_log = workdir / "access.log"
    print(f"scale: {a.targets} targets every {a.interval:g}s, one exporter process, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}; warm-up {warmup:g}s, "
          f"window {a.seconds:g}s, scrape every {a.scrape_interval:g}s", flush=True)
    data = Probes()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    proc = None
    try:
        with Nginx(workdir, access_log=access_log) as nginx:
            cfg = workdir / "vantage.yaml"
            cfg.write_text(
                f"global:\n  interval: {a.interval * 1000:.0f}ms\n"
                f"  timeout: {a.timeout * 1000:.0f}ms\n"
                f"  max_concurrency: {a.max_concurrency}\ntargets:\n"
                + "".join(f"  - name: t{i:05d}\n"
                          f"    url: http://127.0.0.1:{nginx.port}/t/{i:05d}\n"
                          for i in range(a.targets)))
            port = free_port()
            t_launch = time.monotonic()
            proc = start_exporter(cfg, port, workdir)
            startup = time.monotonic() - t_launch
            print(f"  exporter ready in {startup:.1f}s (pid {proc.pid}); warming up", flush=True)
            threads = [
                threading.Thread(target=rss_sampler, args=(proc.pid, stop, data), daemon=True),
                threading.Thread(target=pinger, args=(port, stop, data), daemon=True),
            ]
            for t in threads:
                t.start()
            time.sleep(warmup)
            # the window: starts and ends with a scrape (the histogram difference)
            scrape_thread = threading.Thread(target=scraper,
                                             args=(port, stop, data, a.scrape_interval),
                                             daemon=True)
            c0, q0 = cpu_seconds(proc.pid), runqueue_wait(proc.pid)
            load0 = os.getloadavg()[0]
            w0 = time.time()
            scrape_thread.start()
            threads.append(scrape_thread)
            n_scrapes = int(a.seconds // a.scrape_interval) + 1
            deadline = time.monotonic() + a.seconds + 30
            while len(data.scrapes) < n_scrapes and time.monotonic() < deadline:
                time.sleep(0.05)
            w1 = time.time()
            c1, q1 = cpu_seconds(proc.pid), runqueue_wait(proc.pid)
            load1 = os.getloadavg()[0]
            stop.set()
            for t in threads:
                t.join(timeout=35)
            final = http_get(f"http://127.0.0.1:{port}/metrics").decode()
            # render time and size at the end, every target's series populated
            renders: dict[str, list[tuple[float, int]]] = {"text": [], "text+gzip": []}
            for _ in range(a.render_samples):
                for kind, hdrs in (("text", {}), ("text+gzip", {"Accept-Encoding": "gzip"})):
                    t0 = time.perf_counter()
                    body = http_get(f"http://127.0.0.1:{port}/metrics", hdrs)
                    renders[kind].append((time.perf_counter() - t0, len(body)))
                    time.sleep(0.5)
            stop_process(proc)
            rc = proc.returncode
            proc = None
        # nginx has stopped (SIGQUIT flushed its log buffer)
        lags = nginx_lags(access_log, a.interval, w0, w1)
    finally:
        stop.set()
        stop_process(proc)
        if a.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    # -- report -------------------------------------------------------------------------------
    smoke = a.smoke
    window = w1 - w0
    first, last = data.scrapes[0], data.scrapes[-1]
    own = delta(first[3], last[3])
    n_own = own.get(float("inf"), 0.0)
    own_p50, own_p99 = hist_quantile(0.5, own), hist_quantile(0.99, own)
    ind = [d for _, d in lags]
    ind_p50, ind_p99, ind_max = quantile(0.5, ind), quantile(0.99, ind), max(ind, default=0)
    ping = [lat for sent, lat in data.pings if w0 <= sent <= w1]
    finished = sum_samples(final, "vantage_probes_total")
    success = sum(float(line.rsplit(" ", 1)[1]) for line in final.splitlines()
                  if line.startswith("vantage_probes_total{") and 'outcome="success"' in line)
    skipped = sum_samples(final, "vantage_probes_skipped_total")

    # during scrapes: probes due while a scrape was in progress, pings sent during one
    spans = [(s, s + took) for s, took, _, _ in data.scrapes]

    def during(t: float, margin: float = 0.0) -> bool:
        return any(s - margin <= t <= e + margin for s, e in spans)

    in_scrape = [d for planned, d in lags if during(planned)]
    other_lag = max((d for planned, d in lags if not during(planned, 1.0)), default=0.0)
    in_scrape_ping = [lat for sent, lat in data.pings if during(sent)]
    other_ping = max((lat for sent, lat in data.pings
                      if w0 <= sent <= w1 and not during(sent, 1.0)), default=0.0)
    scrape_lag = max(in_scrape, default=0.0)
    windows = [hist_max_bucket(delta(x[3], y[3]))
               for x, y in zip(data.scrapes, data.scrapes[1:], strict=False)]
    scrape_times = [took for _, took, _, _ in data.scrapes]

    print()
    print(f"window {window:.0f}s: {n_own:.0f} probes started ({n_own / window:.0f}/s; expected "
          f"{a.targets / a.interval * window:.0f}), nginx logged {len(lags)}; "
          f"{finished:.0f} finished in all, {success / max(finished, 1):.2%} success, "
          f"{skipped:.0f} skipped; exporter exit code {rc}")
    print(f"exporter CPU: {(c1 - c0) / window:.1%} of one core "
          f"({n_own / max(c1 - c0, 1e-9):.0f} probes/CPU-s); startup to ready {startup:.1f}s")
    print(f"machine: load average {load0:.1f} -> {load1:.1f}; the exporter's event-loop thread "
          f"waited {(q1 - q0) / window * 1000:.0f} ms/s for a CPU (run queue, other processes)")
    print("scheduler lag, exporter's histogram (interpolated):")
    print(f"  p50 {ms(own_p50)}   p99 {ms(own_p99)}   max in {hist_max_bucket(own)}"
          f"{verdict(own_p99 <= TARGET_LAG_P99, smoke)}")
    print("scheduler lag, independent (nginx arrival - grid slot, includes connect; 1 ms "
          "resolution):")
    over = sum(d > TARGET_SCRAPE_LAG for d in ind)
    print(f"  p50 {ms(ind_p50)}   p99 {ms(ind_p99)}   max {ms(ind_max)}   "
          f"(min {ms(min(ind, default=0))}; {over} over 50 ms)"
          f"{verdict(ind_p99 <= TARGET_LAG_P99, smoke)}")
    print(f"event loop from outside (GET /-/healthy every 100 ms, {len(ping)} samples):")
    print(f"  p50 {ms(quantile(0.5, ping))}   p99 {ms(quantile(0.99, ping))}   "
          f"max {ms(max(ping, default=0))}")
    print(f"RSS: max {max(data.rss, default=0) / 2**20:.0f} MiB, last "
          f"{data.rss[-1] / 2**20 if data.rss else 0:.0f} MiB"
          f"{verdict(max(data.rss, default=0) <= TARGET_RSS, smoke)}")
    for kind, samples in renders.items():
        times = [t for t, _ in samples]
        print(f"/metrics {kind:<9}: {ms(statistics.median(times))} median, "
              f"{ms(max(times))} max, {samples[-1][1] / 2**20:.2f} MiB"
              f"{verdict(max(times) <= TARGET_RENDER, smoke) if kind == 'text' else ''}")
    print(f"scrapes during the window ({len(data.scrapes)}, OpenMetrics+gzip): "
          f"{ms(statistics.median(scrape_times))} median, {ms(max(scrape_times))} max, "
          f"{data.scrapes[-1][2] / 2**20:.2f} MiB")
    print("largest lag while a scrape is served:")
    print(f"  independent, max over the {len(in_scrape)} probes due during a scrape: "
          f"{ms(scrape_lag)}   (away from scrapes: {ms(other_lag)})"
          f"{verdict(scrape_lag <= TARGET_SCRAPE_LAG, smoke)}")
    print(f"  /-/healthy, max over the {len(in_scrape_ping)} pings sent during a scrape: "
          f"{ms(max(in_scrape_ping, default=0.0))}   (away from scrapes: {ms(other_ping)})")
    print(f"  exporter's histogram, worst bucket per scrape-to-scrape window: "
          f"{', '.join(windows) or 'n/a'}")
    if data.errors:
        print(f"harness errors ({len(data.errors)}): {data.errors[:3]}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
