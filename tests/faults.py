"""Real misbehaving servers for tests: every way a target can go wrong, on 127.0.0.1.

Use in-process (``async with FaultServers() as f: f.url("/slow")``) or as a process for the
daemon-level tests: ``python -m tests.faults --port-file F`` writes its ports to F as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import signal
import ssl
import tempfile
from pathlib import Path
from types import TracebackType

import trustme
from aiohttp import web

BIG_BODY = 5 * 1024 * 1024


async def ok(_r: web.Request) -> web.Response:
    return web.Response(text="ok healthy\n")


async def status(r: web.Request) -> web.Response:
    return web.Response(status=int(r.match_info["code"]), text="status\n")


async def slow(r: web.Request) -> web.Response:
    await asyncio.sleep(float(r.query.get("s", "10")))
    return web.Response(text="slow\n")


async def drip(r: web.Request) -> web.StreamResponse:
    """Headers at once, then a byte every 100 ms, forever: only a total deadline stops it."""
    resp = web.StreamResponse()
    resp.content_length = 10_000_000
    await resp.prepare(r)
    with contextlib.suppress(ConnectionError):  # the prober's deadline hangs up on us
        while True:
            await resp.write(b".")
            await asyncio.sleep(0.1)
    return resp


async def reset(r: web.Request) -> web.StreamResponse:
    """Promise 1 MB, send a little, then drop the connection mid-response."""
    resp = web.StreamResponse()
    resp.content_length = 1_000_000
    await resp.prepare(r)
    await resp.write(b"partial body")
    await asyncio.sleep(0.05)
    if r.transport is not None:  # None: the prober already hung up
        r.transport.abort()
    return resp


_BIG = b"x" * BIG_BODY


async def big(_r: web.Request) -> web.Response:
    return web.Response(body=_BIG)


_BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MiB that gzips to ~64 KiB


async def bomb(_r: web.Request) -> web.Response:
    return web.Response(body=_BOMB, headers={"Content-Encoding": "gzip"})


async def gzipped(r: web.Request) -> web.Response:
    resp = web.Response(text=r.query.get("text", "hello world"))
    resp.enable_compression(web.ContentCoding.gzip)
    return resp


async def corrupt_gzip(_r: web.Request) -> web.Response:
    return web.Response(body=b"\x1f\x8b\x08\x00this is not gzip at all" * 10,
                        headers={"Content-Encoding": "gzip"})


async def body(r: web.Request) -> web.Response:
    return web.Response(text=r.query.get("text", "hello world"))


async def redirect_loop(_r: web.Request) -> web.Response:
    raise web.HTTPFound("/redirect-loop")


async def redirect(r: web.Request) -> web.Response:
    raise web.HTTPFound(r.query.get("to", "/ok"))


async def header(r: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"X-State": r.query.get("v", "degraded")})


async def huge_headers(_r: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"X-Huge": "h" * 100_000})


async def echo(r: web.Request) -> web.Response:
    data = await r.read()
    return web.json_response({"method": r.method, "headers": dict(r.headers),
                              "body": data.decode(errors="replace")})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drip", drip)
    app.router.add_get("/reset", reset)
    app.router.add_get("/big", big)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/body", body)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/corrupt-gzip", corrupt_gzip)
    app.router.add_get("/redirect-loop", redirect_loop)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/header", header)
    app.router.add_get("/huge-headers", huge_headers)
    app.router.add_route("*", "/echo", echo)
    return app


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speaks no HTTP: answers any request with junk, then hangs up."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(reader.read(1024), 1)
        writer.write(b"SSH-2.0-OpenSSH_9.0 this is not http\r\n\r\n")
        await writer.drain()
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


class FaultServers:
    """An HTTP server with every fault route, the same app over TLS with a test CA's
    certificate, and a raw TCP server that speaks garbage. Certificates are made now."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vantage-faults-")
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_ctx)
        self._runners: list[web.AppRunner] = []
        self._garbage: asyncio.Server | None = None
        self.port = self.tls_port = self.garbage_port = 0

    async def __aenter__(self) -> FaultServers:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self.port = await self._serve(None)
        self.tls_port = await self._serve(self._server_ctx)
        self._garbage = await asyncio.start_server(_garbage, "127.0.0.1", 0)
        self.garbage_port = self._garbage.sockets[0].getsockname()[1]

    async def _serve(self, ctx: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self._garbage is not None:
            self._garbage.close()
            await self._garbage.wait_closed()
        self._dir.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.tls_port}{path}"

    @property
    def garbage_url(self) -> str:
        return f"http://127.0.0.1:{self.garbage_port}/"

    def ports(self) -> dict[str, object]:
        return {"port": self.port, "tls_port": self.tls_port, "garbage_port": self.garbage_port,
                "ca_file": self.ca_file}


async def _main(port_file: str) -> None:
    async with FaultServers() as f:
        # keep the CA file alive outside the temp dir for the reader
        Path(port_file).write_text(json.dumps(f.ports()))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    asyncio.run(_main(ap.parse_args().port_file))
