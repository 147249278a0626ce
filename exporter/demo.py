"""The embedded demo: targets served by the exporter itself, one per outcome class it can show
without a network (success, timeout, http_error, connect_error, validation_error, dns_error)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from exporter.config import Config, load_config_text

DEMO_YAML = """\
global:
  interval: 5s
  timeout: 2s
modules:
  expects_healthy_body:
    http:
      fail_if_body_not_matches_regexp: ["healthy"]
targets:
  - name: demo-ok
    url: http://127.0.0.1:{port}/demo/ok
    labels: {{team: demo}}
  - name: demo-slow
    url: http://127.0.0.1:{port}/demo/slow
    timeout: 1s
  - name: demo-unavailable
    url: http://127.0.0.1:{port}/demo/unavailable
  - name: demo-wrong-body
    url: http://127.0.0.1:{port}/demo/ok
    module: expects_healthy_body
  - name: demo-refused
    url: http://127.0.0.1:{closed_port}/
  - name: demo-unresolvable
    url: http://vantage-demo.invalid/
"""

SLOW_SECONDS = 3.0


def demo_config(port: int, closed_port: int = 9) -> Config:
    """The demo targets, pointing at an exporter listening on ``port``."""
    return load_config_text(DEMO_YAML.format(port=port, closed_port=closed_port), "<demo>")


async def _ok(_r: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _slow(_r: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_SECONDS)  # outlasts the demo-slow target's 1s timeout
    return web.Response(text="finally\n")


async def _unavailable(_r: web.Request) -> web.Response:
    return web.Response(status=503, text="down for maintenance\n")


def add_demo_routes(app: web.Application) -> None:
    app.router.add_get("/demo/ok", _ok)
    app.router.add_get("/demo/slow", _slow)
    app.router.add_get("/demo/unavailable", _unavailable)
