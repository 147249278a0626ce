"""The end-to-end stack: local target servers, two exporter replicas, a real Prometheus.

Everything listens on 127.0.0.1 ports chosen at run time and lives in a temporary directory:

    local targets (thread)  <-- probed by --  exporter A, exporter B (subprocesses, same config)
                                                   ^ scraped every 1s by
                                               prometheus (subprocess, temp TSDB, alert rules)

Two replicas probe the same targets so that the dashboard's aggregation over instances is
exercised. Every process is stopped by its Popen handle (SIGTERM, wait, SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "vantage-alerts.yml"
JOB = "vantage-exporter"  # as in deploy/prometheus/, whose alert rules select on it

PROBE_INTERVAL = "1s"
PROBE_TIMEOUT = "500ms"
SLOW_RESPONSE_SECONDS = 2.0  # well past the probe timeout, so the probe ends in `timeout`
STARTUP_SECONDS = 20.0  # each process must be ready within this
DATA_SECONDS = 60.0  # queries may wait this long, from the moment Prometheus is up, for data

# Target name -> the one outcome class every probe of it must end in.
EXPECTED_OUTCOMES = {
    "ok": "success",
    "tls-ok": "success",
    "slow": "timeout",
    "refused": "connect_error",
    "unavailable": "http_error",
    "tls-untrusted": "tls_error",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body; an HTTP error status is a result here, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error (the query is invalid or failed)."""


def prometheus_api(base_url: str, path: str, params: dict[str, str] | None = None) -> Any:
    query = "?" + urllib.parse.urlencode(params) if params else ""
    status, body = http_get(f"{base_url}{path}{query}")
    payload = json.loads(body)
    if status != 200 or payload.get("status") != "success":
        raise PrometheusError(f"{path} {params}: HTTP {status}: {payload.get('error', body[:300])}")
    return payload["data"]


class Process:
    """A subprocess whose output goes to a log file, stopped by its own handle."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- last lines of {self.name} ({self.log_path}) ---\n" + "\n".join(text[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            pytest.fail(f"{self.name} exited with {code}\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def wait_until_ready(process: Process, url: str, timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{process.name}: {url} not ready after {timeout}s\n{process.tail()}")
        time.sleep(0.1)


class LocalTargets:
    """The probed servers, on an event loop of their own in a background thread.

    One plain HTTP server answers /ok (200), /unavailable (503) and /slow (after
    SLOW_RESPONSE_SECONDS); one HTTPS server with a certificate from a CA made now answers /ok.
    Probing it with that CA is a success, without it a tls_error. `refused_port` has no listener.
    """

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._tls = tls
        self._http_sock = self._listen()
        self._https_sock = self._listen()
        self.http_port: int = self._http_sock.getsockname()[1]
        self.https_port: int = self._https_sock.getsockname()[1]
        self.refused_port = free_port()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-local-targets", daemon=True)

    @staticmethod
    def _listen() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        return sock

    def __enter__(self) -> LocalTargets:
        self._thread.start()
        if not self._started.wait(STARTUP_SECONDS) or self._error is not None:
            self.__exit__()
            raise RuntimeError("local target servers did not start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.ident is not None:
            self._thread.join(STARTUP_SECONDS)
        self._http_sock.close()
        self._https_sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by __enter__
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()

        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def unavailable(_: web.Request) -> web.Response:
            return web.Response(status=503, text="unavailable\n")

        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(SLOW_RESPONSE_SECONDS)
            return web.Response(text="late\n")

        app = web.Application()
        app.router.add_get("/ok", ok)
        app.router.add_get("/unavailable", unavailable)
        app.router.add_get("/slow", slow)
        # A short shutdown_timeout: slow handlers still sleeping must not hold teardown for 60 s.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.SockSite(runner, self._http_sock).start()
            await web.SockSite(runner, self._https_sock, ssl_context=self._tls).start()
            self._started.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()


@dataclass(frozen=True)
class Stack:
    prometheus_url: str
    exporter_urls: tuple[str, ...]
    instances: tuple[str, ...]  # the `instance` label of each exporter, as Prometheus sets it
    job: str
    targets: tuple[str, ...]
    rules_file: Path | None  # the alert rules loaded into Prometheus, None if the repo has none
    deadline: float  # time.monotonic() after which waiting for data is a failure
    processes: tuple[Process, ...]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = prometheus_api(self.prometheus_url, "/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def query_until_nonempty(self, expr: str) -> list[dict[str, Any]]:
        """The query's result once non-empty (rates need two samples); invalid raises at once."""
        while True:
            result = self.query(expr)
            if result or time.monotonic() > self.deadline:
                return result
            self.check_alive()
            time.sleep(0.5)

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)


def exporter_config(directory: Path, targets: LocalTargets, ca_file: Path) -> Path:
    http = f"http://127.0.0.1:{targets.http_port}"
    https = f"https://127.0.0.1:{targets.https_port}"
    targets_config: list[dict[str, Any]] = [
        {"name": "ok", "url": f"{http}/ok", "labels": {"team": "e2e"}},
        {"name": "slow", "url": f"{http}/slow"},
        {"name": "unavailable", "url": f"{http}/unavailable"},
        {"name": "refused", "url": f"http://127.0.0.1:{targets.refused_port}/"},
        {"name": "tls-ok", "url": f"{https}/ok", "http": {"tls": {"ca_file": str(ca_file)}}},
        {"name": "tls-untrusted", "url": f"{https}/ok"},
    ]
    assert {t["name"] for t in targets_config} == set(EXPECTED_OUTCOMES)
    config = {
        "global": {"interval": PROBE_INTERVAL, "timeout": PROBE_TIMEOUT},
        "targets": targets_config,
    }
    path = directory / "vantage.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alert_rules(directory: Path) -> Path | None:
    """The repo's alert rules with every group evaluated each second.

    Group intervals are a deployment choice; here a first evaluation must come within the test's
    time budget, and health "ok" means the same whatever the interval.
    """
    if not ALERT_RULES.exists():
        return None
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules.get("groups", []):
        group["interval"] = "1s"
    path = directory / "vantage-alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def prometheus_config(directory: Path, instances: list[str], rules: Path | None) -> Path:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": instances}]}],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
