#!/usr/bin/env python3
"""Cost per probe: probes per CPU-second of each exporter process, side by side, in one run.

Against one local nginx on loopback (``return 200 "ok";``, one worker), each round measures:

- ``blackbox``: Debian's prometheus-blackbox-exporter driven by ``wrk`` at ``/probe?target=...``
  with a module using ``preferred_ip_protocol: ip4`` (one probe per request, fresh connection);
- ``vantage``: vantage-exporter probing the same URL with fresh connections (many targets,
  short intervals, ``max_concurrency`` sized to keep it saturated), counted from its own
  ``/metrics`` (sum of ``vantage_probes_total``);
- ``bare-uvloop`` / ``bare-asyncio``: a bare aiohttp loop (``force_close`` connector,
  ``limit=0``) doing the same GETs from ``--concurrency`` workers: what an aiohttp-based
  prober could at best do;
- ``bare-wire``: the same GETs through vantage's own HTTP layer (``exporter.probes.wire``)
  alone, on uvloop: the floor under vantage's cost (no scheduler, deadlines or metrics).

The cost figure is probes finished per CPU-second (user+sys from ``/proc/PID/stat``) of the
exporter process alone (not wrk, not nginx), over a fixed window after a warm-up. Rounds
alternate the order of the five; the medians and the ratios vantage/blackbox and vantage/bare
are printed at the end, with nginx's own request count as a cross-check.

Usage::

    python bench/probe_cost.py                       # 3 rounds x 10 s windows (~3 minutes)
    python bench/probe_cost.py --rounds 5 --seconds 15
    python bench/probe_cost.py --smoke               # a few seconds, no thresholds

``bench/scale.py`` imports the helpers here (nginx, /proc, free ports).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BLACKBOX = "prometheus-blackbox-exporter"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets from issue 6.
TARGET_VS_BLACKBOX = 2.0
TARGET_VS_BARE = 0.85


# -- helpers shared with scale.py -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user+sys CPU time of one process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    """Stop one process we started, by its PID: signal, wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def sum_samples(text: str, name: str) -> float:
    """Sum of every sample of one metric name (any labels) in a text exposition."""
    total = 0.0
    prefix_labels, prefix_bare = name + "{", name + " "
    for line in text.splitlines():
        if line.startswith((prefix_labels, prefix_bare)):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Nginx:
    """A private nginx (one worker) in a temp dir on a free loopback port, run as this user.

    ``GET /`` and every other path answers ``200 ok``; ``/nginx_status`` is stub_status, whose
    request counter cross-checks the exporters' own counts. With ``access_log`` set, each
    request is logged as ``$msec $request_uri`` (scale.py's independent lag measurement).
    """

    def __init__(self, workdir: Path, access_log: Path | None = None,
                 worker_connections: int = 8192) -> None:
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.access_log = access_log
        self.worker_connections = worker_connections
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _config(self) -> str:
        d = self.dir
        user = ""
        if os.geteuid() == 0:  # otherwise nginx drops the workers to nobody
            import grp
            import pwd
            pw = pwd.getpwuid(os.getuid())
            user = f"user {pw.pw_name} {grp.getgrgid(pw.pw_gid).gr_name};"
        log = (f"access_log {self.access_log} grid buffer=256k flush=1s;"
               if self.access_log else "access_log off;")
        return f"""
{user}
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {self.worker_connections}; }}
http {{
    log_format grid '$msec $request_uri';
    {log}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location = /nginx_status {{ stub_status; }}
        location / {{ return 200 "ok"; }}
    }}
}}
"""

    def start(self) -> None:
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"))  # noqa: SIM115 -- lives as long as nginx
        wait_until(lambda: http_get(self.url, timeout=1) == b"ok", 10, "nginx", self.proc)

    def requests(self) -> int:
        """stub_status' request counter (this read itself included)."""
        text = http_get(f"http://127.0.0.1:{self.port}/nginx_status", timeout=5).decode()
        m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
        if not m:
            raise RuntimeError(f"unexpected stub_status: {text!r}")
        return int(m.group(3))

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT)  # graceful: flushes the access log buffer

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exporter_command(config: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "exporter", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]


def start_exporter(config: Path, port: int, workdir: Path, ready_timeout: float = 120.0
                   ) -> subprocess.Popen[bytes]:
    """Start vantage-exporter (from the import path in effect: PYTHONPATH may point at a
    scratch copy; the cwd is the temp dir so the current directory never shadows it)."""
    log = workdir / f"exporter-{port}.log"
    proc = subprocess.Popen(exporter_command(config, port), cwd=workdir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115 -- lives as long as it
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/-/ready", timeout=2) != b"",
                   ready_timeout, "vantage-exporter", proc)
    except BaseException:
        stop_process(proc)
        sys.stderr.write(log.read_text(errors="replace")[-2000:])
        raise
    return proc


# -- the bare aiohttp loop (run as a child: python probe_cost.py _bare ...) --------------------


def bare_child(url: str, concurrency: int, loop_kind: str) -> None:
    """Fresh-connection GETs from ``concurrency`` workers; prints the count on SIGUSR1.

    ``uvloop``/``asyncio``: through an aiohttp ``ClientSession`` (``force_close``, ``limit=0``).
    ``wire``: through vantage's own HTTP layer and nothing else (no scheduler, deadline or
    metrics): what a probe costs at the bottom; vantage adds the rest.
    """
    import asyncio
    from collections.abc import Awaitable
    from urllib.parse import urlsplit

    import aiohttp

    async def drive(get: Callable[[], Awaitable[bool]]) -> None:
        count = 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: print(count, flush=True))
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        async def worker() -> None:
            nonlocal count
            while True:
                if await get():
                    count += 1

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        print("ready", flush=True)
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def with_aiohttp() -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True, use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def get() -> bool:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status == 200

            await drive(get)

    async def with_wire() -> None:
        from exporter.probes.wire import Exchange

        loop = asyncio.get_running_loop()
        u = urlsplit(url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        request = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                   "Connection: close\r\n\r\n").encode()

        async def get() -> bool:
            ex = Exchange(loop, lambda _h: (lambda _b: None))
            transport, _ = await loop.create_connection(lambda: ex, host, port)
            transport.write(request)
            await ex.complete()
            transport.close()
            return ex.status == 200

        await drive(get)

    if loop_kind == "asyncio":
        asyncio.run(with_aiohttp())
    else:
        import uvloop
        uvloop.run(with_wire() if loop_kind == "wire" else with_aiohttp())


# -- measurement ------------------------------------------------------------------------------


@dataclass
class Window:
    probes: float
    cpu: float
    wall: float
    nginx: int  # requests nginx saw in the window (cross-check)
    skipped: float = 0.0  # vantage only: scheduled runs it skipped in the window

    @property
    def per_cpu(self) -> float:
        return self.probes / self.cpu if self.cpu > 0 else 0.0


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    nginx: Nginx
    results: dict[str, list[Window]] = field(default_factory=dict)
    blackbox: subprocess.Popen[bytes] | None = None
    blackbox_port: int = 0

    # blackbox_exporter: started once, idle (no CPU) between its windows
    def start_blackbox(self) -> None:
        cfg = self.workdir / "blackbox.yml"
        cfg.write_text("modules:\n  http_ip4:\n    prober: http\n    timeout: 5s\n"
                       "    http:\n      preferred_ip_protocol: ip4\n"
                       "      ip_protocol_fallback: false\n")
        self.blackbox_port = free_port()
        self.blackbox = subprocess.Popen(
            [BLACKBOX, f"--config.file={cfg}",
             f"--web.listen-address=127.0.0.1:{self.blackbox_port}", "--log.level=warn"],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "blackbox.log", "wb"))  # noqa: SIM115
        probe = self.blackbox_probe_url()
        wait_until(lambda: b"probe_success 1" in http_get(probe, timeout=5), 20,
                   "blackbox_exporter", self.blackbox)

    def blackbox_probe_url(self) -> str:
        q = urllib.parse.urlencode({"target": self.nginx.url, "module": "http_ip4"})
        return f"http://127.0.0.1:{self.blackbox_port}/probe?{q}"

    def run_wrk(self, seconds: float) -> tuple[int, str]:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{self.args.concurrency}", f"-d{max(1, round(seconds))}s",
             "--timeout", "5s", self.blackbox_probe_url()],
            capture_output=True, text=True, check=True).stdout
        m = re.search(r"(\d+) requests in", out)
        if not m:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        n = int(m.group(1)) - (int(bad.group(1)) if bad else 0)
        return n, errors.group(1) if errors else ""

    def measure_blackbox(self) -> Window:
        assert self.blackbox is not None
        self.run_wrk(self.args.warmup)
        pid = self.blackbox.pid
        n0, c0, t0 = self.nginx.requests(), cpu_seconds(pid), time.monotonic()
        probes, errors = self.run_wrk(self.args.seconds)
        c1, t1, n1 = cpu_seconds(pid), time.monotonic(), self.nginx.requests()
        if errors:
            print(f"    (wrk socket errors: {errors})")
        if b"probe_success 1" not in http_get(self.blackbox_probe_url()):
            raise RuntimeError("blackbox_exporter's probes stopped succeeding")
        return Window(probes, c1 - c0, t1 - t0, n1 - n0 - 1)

    def measure_vantage(self) -> Window:
        a = self.args
        port = free_port()
        cfg = self.workdir / "vantage.yaml"
        lines = [f"global:\n  interval: {a.vantage_interval}\n  timeout: {a.vantage_timeout}\n"
                 f"  max_concurrency: {a.concurrency}\ntargets:\n"]
        lines += [f"  - name: t{i:05d}\n    url: {self.nginx.url}\n"
                  for i in range(a.vantage_targets)]
        cfg.write_text("".join(lines))
        proc = start_exporter(cfg, port, self.workdir)
        metrics = f"http://127.0.0.1:{port}/metrics"
        try:
            time.sleep(a.warmup)

            def probes() -> tuple[float, float, float]:
                text = http_get(metrics).decode()
                ok = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("vantage_probes_total{")
                         and 'outcome="success"' in line)
                return (sum_samples(text, "vantage_probes_total"), ok,
                        sum_samples(text, "vantage_probes_skipped_total"))

            (p0, ok0, s0), n0, c0, t0 = probes(), self.nginx.requests(), \
                cpu_seconds(proc.pid), time.monotonic()
            time.sleep(a.seconds)
            (p1, ok1, s1), n1, c1, t1 = probes(), self.nginx.requests(), \
                cpu_seconds(proc.pid), time.monotonic()
            if p1 - p0 and (ok1 - ok0) / (p1 - p0) < 0.99:
                print(f"    (only {(ok1 - ok0) / (p1 - p0):.1%} of vantage's probes succeeded)")
            if p1 - p0:
                print(f"    (vantage: {a.vantage_targets} targets, {s1 - s0:.0f} runs skipped "
                      f"in the window, {(s1 - s0) / (p1 - p0 + s1 - s0):.0%} of those due)")
            return Window(p1 - p0, c1 - c0, t1 - t0, n1 - n0 - 1, s1 - s0)
        finally:
            stop_process(proc)

    def measure_bare(self, loop_kind: str, seconds: float | None = None) -> Window:
        a = self.args
        proc = subprocess.Popen(
            [sys.executable, __file__, "_bare", self.nginx.url, str(a.concurrency), loop_kind],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("bare loop did not start")
            time.sleep(a.warmup)

            def count() -> float:
                os.kill(proc.pid, signal.SIGUSR1)
                assert proc.stdout is not None
                return float(proc.stdout.readline())

            p0, n0, c0, t0 = count(), self.nginx.requests(), cpu_seconds(proc.pid), \
                time.monotonic()
            time.sleep(a.seconds if seconds is None else seconds)
            p1, n1, c1, t1 = count(), self.nginx.requests(), cpu_seconds(proc.pid), \
                time.monotonic()
            return Window(p1 - p0, c1 - c0, t1 - t0, n1 - n0 - 1)
        finally:
            stop_process(proc)

    def calibrate(self) -> None:
        """Size vantage's offered load to keep it saturated without drowning it: start at
        what the bare aiohttp loop does per second and offer 1.25x more each step, until
        vantage skips at least ``--min-skipped`` of its due runs (it has a backlog: every
        connection slot is always busy). Runs beyond capacity are skipped (and counted) by
        design; a gross overload would mostly measure that accounting, not probing."""
        if self.args.vantage_targets:
            return
        interval = parse_seconds(self.args.vantage_interval)
        w = self.measure_bare("uvloop", seconds=2.0)
        self.args.vantage_targets = max(50, round(w.probes / w.wall * interval))
        seconds, self.args.seconds = self.args.seconds, 3.0
        try:
            for _ in range(8):
                v = self.measure_vantage()
                share = v.skipped / (v.probes + v.skipped) if v.probes + v.skipped else 0.0
                print(f"calibration: {self.args.vantage_targets} targets every "
                      f"{self.args.vantage_interval}: {v.probes / v.wall:.0f} probes/s, "
                      f"{share:.0%} skipped, CPU {v.cpu / v.wall:.0%}", flush=True)
                if share >= self.args.min_skipped:
                    break
                self.args.vantage_targets = round(self.args.vantage_targets * 1.25)
        finally:
            self.args.seconds = seconds

    def run(self) -> None:
        kinds: dict[str, Callable[[], Window]] = {
            "blackbox": self.measure_blackbox,
            "vantage": self.measure_vantage,
            "bare-uvloop": lambda: self.measure_bare("uvloop"),
            "bare-asyncio": lambda: self.measure_bare("asyncio"),
            "bare-wire": lambda: self.measure_bare("wire"),
        }
        names = list(kinds)
        for r in range(self.args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # alternate the order
            print(f"round {r + 1}/{self.args.rounds}", flush=True)
            for name in order:
                w = kinds[name]()
                self.results.setdefault(name, []).append(w)
                print(f"  {name:<13} {w.per_cpu:8.0f} probes/CPU-s  {w.probes:8.0f} probes "
                      f"in {w.wall:5.1f}s ({w.probes / w.wall:6.0f}/s), CPU {w.cpu:5.2f}s "
                      f"({w.cpu / w.wall:4.0%}), nginx saw {w.nginx}", flush=True)


def median_per_cpu(ws: list[Window]) -> float:
    return statistics.median(w.per_cpu for w in ws)


def report(results: dict[str, list[Window]], smoke: bool) -> None:
    print()
    print("probes per CPU-second of the exporter process (median of "
          f"{len(results['vantage'])} rounds; user+sys from /proc, wrk and nginx excluded):")
    med = {name: median_per_cpu(ws) for name, ws in results.items()}
    for name, value in med.items():
        rate = statistics.median(w.probes / w.wall for w in results[name])
        print(f"  {name:<13} {value:8.0f} probes/CPU-s   ({rate:6.0f} probes/s wall)")
    # ratios per round (alternating rounds share conditions), then their median
    def ratio(a: str, b: str) -> float:
        return statistics.median(x.per_cpu / y.per_cpu
                                 for x, y in zip(results[a], results[b], strict=True))

    vb, vbare, uv = ratio("vantage", "blackbox"), ratio("vantage", "bare-uvloop"), \
        ratio("bare-uvloop", "bare-asyncio")
    print("ratios (median of per-round ratios):")
    if smoke:
        print(f"  vantage/blackbox      {vb:5.2f}x")
        print(f"  vantage/bare-uvloop   {vbare:5.1%}")
    else:
        print(f"  vantage/blackbox      {vb:5.2f}x   target >= {TARGET_VS_BLACKBOX:.1f}x: "
              f"{'met' if vb >= TARGET_VS_BLACKBOX else 'MISSED'}")
        print(f"  vantage/bare-uvloop   {vbare:5.1%}   target >= {TARGET_VS_BARE:.0%}: "
              f"{'met' if vbare >= TARGET_VS_BARE else 'MISSED'}")
    print(f"  uvloop/asyncio (bare) {uv:5.2f}x")
    print(f"  vantage/bare-wire     {ratio('vantage', 'bare-wire'):5.1%}   (vantage's own "
          "HTTP layer alone: what scheduling, deadlines and metrics cost on top)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per exporter")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    p.add_argument("--concurrency", type=int, default=32,
                   help="wrk connections, vantage max_concurrency, bare-loop workers")
    p.add_argument("--vantage-targets", type=int, default=0,
                   help="targets for vantage (default: calibrated until it skips "
                        "--min-skipped of its runs, so it stays saturated)")
    p.add_argument("--min-skipped", type=float, default=0.10,
                   help="calibration: raise vantage's targets until it skips this share of "
                        "its due runs (default 0.10: it always has a backlog)")
    p.add_argument("--vantage-interval", default="1s")
    p.add_argument("--vantage-timeout", default="900ms")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--smoke", action="store_true",
                   help="1 round of 1 s windows, small config, no thresholds")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 1, 1.0, 0.5
        args.vantage_targets = 200
    return args


def parse_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    if not m:
        raise ValueError(f"{text!r}: use e.g. 500ms or 1s")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def missing_tools() -> list[str]:
    return [t for t in ("nginx", "wrk", BLACKBOX) if shutil.which(t) is None]


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_bare":
        bare_child(argv[1], int(argv[2]), argv[3])
        return 0
    args = parse_args(argv)
    if missing := missing_tools():
        print(f"missing: {', '.join(missing)} (apt-get install nginx-light wrk "
              "prometheus-blackbox-exporter)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vantage-probe-cost-"))
    print(f"probe_cost: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"{args.rounds} rounds x {args.seconds:g}s windows, concurrency {args.concurrency}",
          flush=True)
    bench = None
    try:
        with Nginx(workdir) as nginx:
            bench = Bench(args, workdir, nginx)
            try:
                bench.start_blackbox()
                bench.calibrate()
                bench.run()
            finally:
                stop_process(bench.blackbox)
        report(bench.results, args.smoke)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
