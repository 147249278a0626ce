"""The web side: ``/metrics``, health, readiness, reload, the status page and its JSON.

The handlers only read state; the daemon owns it (see :class:`Host`).
"""

from __future__ import annotations

import asyncio
import html
import time
import zlib
from typing import Any, Protocol

from aiohttp import web

from exporter.config import Target
from exporter.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Metrics
from exporter.outcome import EXPLANATIONS, ProbeResult

#: Bytes of exposition written (and gzipped) per step of a scrape.
_WRITE_BATCH = 256 * 1024

_COLOURS = {"success": "#2e7d32", "timeout": "#ef6c00", "dns_error": "#6a1b9a",
            "connect_error": "#c62828", "tls_error": "#ad1457", "network_error": "#d84315",
            "http_error": "#b71c1c", "validation_error": "#f9a825", "crash": "#000000"}


class Host(Protocol):
    """What the web app needs from the daemon."""

    metrics: Metrics
    ready: bool
    lifecycle_enabled: bool
    demo: bool

    def slots(self) -> list[tuple[Target, ProbeResult | None, float, bool]]: ...
    async def reload(self) -> tuple[bool, str]: ...


HOST_KEY = web.AppKey("host", Host)


def make_app(host: Host) -> web.Application:
    app = web.Application()
    app[HOST_KEY] = host
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_route("*", "/-/reload", reload)
    app.router.add_get("/api/v1/targets", targets_json)
    app.router.add_get("/", status_page)
    return app


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    """Streams the exposition in slices, yielding to the event loop between them, so a big
    scrape never delays probes by more than one slice's work (about a millisecond)."""
    metrics = request.app[HOST_KEY].metrics
    metrics.tasks = len(asyncio.all_tasks())
    om = "application/openmetrics-text" in request.headers.get("Accept", "")
    parts = metrics.render_parts(openmetrics_format=om)  # the snapshot is taken here
    resp = web.StreamResponse(headers={
        "Content-Type": OPENMETRICS_CONTENT_TYPE if om else TEXT_CONTENT_TYPE})
    # gzip level 1 by hand: aiohttp's compression uses level 6, several times the CPU
    gz = zlib.compressobj(1, zlib.DEFLATED, 31) \
        if "gzip" in request.headers.get("Accept-Encoding", "") else None
    if gz is not None:
        resp.headers["Content-Encoding"] = "gzip"
    await resp.prepare(request)
    batch: list[bytes] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= _WRITE_BATCH:
            data = b"".join(batch)
            await resp.write(gz.compress(data) if gz is not None else data)
            batch, size = [], 0
            await asyncio.sleep(0)  # let due timers and probes run
    data = b"".join(batch)
    await resp.write(gz.compress(data) + gz.flush() if gz is not None else data)
    await resp.write_eof()
    return resp


async def healthy(_request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[HOST_KEY].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: no config scheduled, or shutting down.\n")


async def reload(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    if request.method not in ("POST", "PUT"):
        return web.Response(status=405, text="Only POST or PUT requests allowed.\n",
                            headers={"Allow": "POST, PUT"})
    if not host.lifecycle_enabled:
        return web.Response(status=403,
                            text="Lifecycle API is not enabled: start with "
                                 "--web.enable-lifecycle to allow POST /-/reload.\n")
    ok, message = await host.reload()
    return web.Response(status=200 if ok else 400, text=message.rstrip() + "\n")


def _target_doc(target: Target, last: ProbeResult | None, next_run: float, running: bool,
                finished_at: float) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": target.name, "url": target.url, "module": target.module,
        "interval_seconds": target.interval, "timeout_seconds": target.timeout,
        "labels": dict(target.labels), "running": running, "next_run": next_run,
        "last": None,
    }
    if last is not None:
        doc["last"] = {
            "outcome": last.outcome.value,
            "explanation": EXPLANATIONS[last.outcome],
            "error": last.detail,
            "duration_seconds": round(last.duration, 6),
            "status_code": last.status_code,
            "phases": {k: round(v, 6) for k, v in last.phases.items()},
            "tls_cert_expiry": last.tls_cert_expiry or None,
            "finished_at": finished_at,
        }
    return doc


async def targets_json(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    docs = []
    for target, last, next_run, running in host.slots():
        series = host.metrics.series(target.name)
        finished_at = series.last_run if series is not None else 0.0
        docs.append(_target_doc(target, last, next_run, running, finished_at))
    return web.json_response({"status": "success", "ready": host.ready, "demo": host.demo,
                              "targets": docs})


def _ago(ts: float, now: float) -> str:
    if not ts:
        return "never"
    d = now - ts
    return f"{d:.0f}s ago" if d >= 0 else f"in {-d:.0f}s"


async def status_page(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    now = time.time()
    rows = []
    for target, last, next_run, running in sorted(host.slots(), key=lambda s: s[0].name):
        series = host.metrics.series(target.name)
        esc = html.escape
        if last is None:
            outcome_cell = '<td class="o" style="background:#9e9e9e">pending</td>'
            detail = "not probed yet"
            latency = status = "-"
        else:
            o = last.outcome.value
            outcome_cell = f'<td class="o" style="background:{_COLOURS[o]}">{o}</td>'
            detail = EXPLANATIONS[last.outcome] + (f": {last.detail}" if last.detail else "")
            latency = f"{last.duration * 1000:.1f} ms"
            status = str(last.status_code or "-")
        rows.append(
            f"<tr><td>{esc(target.name)}</td><td><a href=\"{esc(target.url)}\">"
            f"{esc(target.url)}</a></td>{outcome_cell}<td>{esc(detail)}</td><td>{latency}</td>"
            f"<td>{status}</td><td>{_ago(series.last_run if series else 0, now)}</td>"
            f"<td>{'running' if running else _ago(next_run, now)}</td></tr>")
    banner = ("<p class=\"demo\">Demo mode: no config file given, these targets are served by "
              "this exporter itself.</p>" if host.demo else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vantage-exporter</title>
<meta http-equiv="refresh" content="5">
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}}
td.o{{color:#fff;font-weight:bold}}.demo{{background:#fff3cd;padding:.5em}}</style></head>
<body><h1>vantage-exporter</h1>{banner}
<p>{len(rows)} targets &middot; <a href="/metrics">metrics</a> &middot;
<a href="/api/v1/targets">JSON</a> &middot; ready: {host.ready}</p>
<table><tr><th>target</th><th>url</th><th>last outcome</th><th>why</th><th>latency</th>
<th>status</th><th>last run</th><th>next run</th></tr>
{"".join(rows)}</table></body></html>"""
    return web.Response(text=page, content_type="text/html")
