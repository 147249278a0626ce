"""Byte-exact misbehaving servers: a raw TCP server replays a script after the request head.

The probe speaks HTTP/1.1 itself (exporter.probes.wire), so every framing rule and every way a
peer can break it is checked here against real sockets, with the outcome and its words.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exporter.outcome import Outcome
from exporter.probes.http import HTTPProber
from tests.integration.test_probe_outcomes import make_target

# A script: bytes are written (and drained), floats are sleeps, "close" closes, "reset" sends a
# TCP RST, "hang" waits until the client goes away. "next" waits for another request head on
# the same connection (keep-alive).
Script = list[Any]


class RawServer:
    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            await self._play(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _play(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        name = head.split(b" ")[1].decode().lstrip("/").split("?")[0]
        for step in self.scripts[name]:
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            elif step == "next":
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            elif step == "close":
                return
            elif step == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif step == "hang":
                await reader.read()  # until the client hangs up
                return


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def assert_fds_back_to(baseline: int) -> None:
    """Descriptors return to ``baseline``; the raw server's side of a connection closes on a
    later loop turn, so poll a little (a leak never comes back)."""
    for _ in range(40):
        if open_fds() <= baseline:
            return
        await asyncio.sleep(0.05)
    assert open_fds() <= baseline


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_GZ = gzip.compress(b"all systems nominal " * 50)
_GZ_CUT = _GZ[:len(_GZ) // 2]


def gzipped(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)

# name, script, http settings, outcome, words expected in the detail
CASES: list[tuple[str, Script, dict[str, Any], Outcome, str]] = [
    ("plain", [OK], {}, Outcome.SUCCESS, ""),
    ("http10-read-to-close", [b"HTTP/1.0 200 OK\r\n\r\nbody runs until ", 0.05, b"close",
                              "close"],
     {"fail_if_body_not_matches_regexp": ["until close$"]}, Outcome.SUCCESS, ""),
    ("chunked", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                 0.05, b"6\r\n world\r\n0\r\n\r\n"],
     {"fail_if_body_not_matches_regexp": ["^hello world$"]}, Outcome.SUCCESS, ""),
    ("head-split-in-pieces", [b"HTTP/1.1 200 O", 0.02, b"K\r\nContent-Le", 0.02,
                              b"ngth: 2\r\n\r", 0.02, b"\nok"], {}, Outcome.SUCCESS, ""),
    ("bare-lf-line-ends", [b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"], {},
     Outcome.SUCCESS, ""),
    ("interim-100", [b"HTTP/1.1 100 Continue\r\n\r\n", OK], {}, Outcome.SUCCESS, ""),
    ("no-content", [b"HTTP/1.1 204 No Content\r\n\r\n", "hang"], {}, Outcome.SUCCESS, ""),
    ("bytes-after-the-response", [OK + b"GARBAGE AFTER", "hang"], {}, Outcome.SUCCESS, ""),
    ("status-not-accepted", [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"],
     {}, Outcome.HTTP_ERROR, "503 Service Unavailable"),
    ("silent-close", ["close"], {}, Outcome.NETWORK_ERROR, "before sending a response"),
    ("close-mid-head", [b"HTTP/1.1 200 OK\r\nContent-Le", "close"], {},
     Outcome.NETWORK_ERROR, "middle of the response head"),
    ("short-body", [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", "close"],
     {}, Outcome.NETWORK_ERROR, "before the body was complete"),
    ("reset-mid-body", [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", 0.05,
                        "reset"], {}, Outcome.NETWORK_ERROR, "before the body was complete"),
    ("reset-before-answer", ["reset"], {}, Outcome.NETWORK_ERROR, ""),
    ("bad-chunk-size", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], {},
     Outcome.NETWORK_ERROR, "invalid HTTP response"),
    ("unterminated-chunks", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n", "close"], {}, Outcome.NETWORK_ERROR,
     "before the body was complete"),
    ("conflicting-lengths", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n"
                             b"\r\nok"], {}, Outcome.NETWORK_ERROR, "invalid HTTP response"),
    ("header-without-colon", [b"HTTP/1.1 200 OK\r\nthis is no header\r\n\r\n"], {},
     Outcome.NETWORK_ERROR, "invalid HTTP response"),
    ("not-http", [b"220 smtp.example.com ESMTP ready\r\n", "hang"], {},
     Outcome.NETWORK_ERROR, "invalid HTTP response"),
    ("endless-headers", [b"HTTP/1.1 200 OK\r\n", *([b"X-Filler: " + b"f" * 1000 + b"\r\n"] * 80),
                         "hang"], {}, Outcome.NETWORK_ERROR, "larger than 64 KiB"),
    ("headers-then-silence", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "hang"], {},
     Outcome.TIMEOUT, "during transfer"),
    ("silence", ["hang"], {}, Outcome.TIMEOUT, "during processing"),
    ("redirect-without-location", [b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"], {},
     Outcome.HTTP_ERROR, "302"),
    ("redirect-to-ftp", [b"HTTP/1.1 302 Found\r\nLocation: ftp://example.invalid/x\r\n"
                         b"Content-Length: 0\r\n\r\n"], {}, Outcome.HTTP_ERROR,
     "not an http(s) URL"),
    ("gzip", [gzipped(_GZ)], {"fail_if_body_not_matches_regexp": ["nominal all systems"]},
     Outcome.SUCCESS, ""),
    ("gzip-truncated", [gzipped(_GZ_CUT)], {}, Outcome.NETWORK_ERROR, "truncated"),
    ("cap-on-close-delimited-body", [b"HTTP/1.0 200 OK\r\n\r\n", *([b"x" * 4096] * 8),
                                     "hang"], {"max_body_bytes": "16KiB"},
     Outcome.VALIDATION_ERROR, "max_body_bytes"),
]


@pytest.mark.parametrize(("name", "script", "http", "outcome", "detail"), CASES,
                         ids=[c[0] for c in CASES])
async def test_scripted_response(raw: RawServer, prober: HTTPProber, name: str, script: Script,
                                 http: dict[str, Any], outcome: Outcome, detail: str) -> None:
    raw.scripts[name] = script
    result = await prober.probe(make_target(raw.url(name), "600ms", **http))
    assert result.outcome is outcome, result
    assert detail in result.detail, result.detail
    if outcome is Outcome.SUCCESS:
        assert result.status_code in (200, 204)
        assert result.phases["connect"] > 0
        assert result.phases["resolve"] == 0  # an IP literal is not resolved


async def test_head_request_does_not_wait_for_the_announced_body(
        raw: RawServer, prober: HTTPProber) -> None:
    raw.scripts["head"] = [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "hang"]
    result = await prober.probe(make_target(raw.url("head"), "600ms", method="HEAD"))
    assert result.outcome is Outcome.SUCCESS, result
    assert raw.requests[-1].startswith(b"HEAD /head HTTP/1.1\r\n")


async def test_request_head_is_well_formed(raw: RawServer, prober: HTTPProber) -> None:
    raw.scripts["echo"] = [OK]
    target = make_target(raw.url("echo") + "?q=1%202", "600ms", method="POST", body="hi",
                         headers={"Host": "virtual.example", "X-Team": "payments"})
    result = await prober.probe(target)
    assert result.outcome is Outcome.SUCCESS, result
    head = raw.requests[-1].decode()
    lines = head.split("\r\n")
    assert lines[0] == "POST /echo?q=1%202 HTTP/1.1"
    assert "Host: virtual.example" in lines  # a configured Host replaces ours
    assert sum(line.lower().startswith("host:") for line in lines) == 1
    assert "X-Team: payments" in lines
    assert "Connection: close" in lines
    assert "Content-Length: 2" in lines
    assert "Accept-Encoding: gzip, deflate" in lines


async def test_keepalive_survives_a_server_that_dropped_the_idle_connection(
        raw: RawServer, prober: HTTPProber) -> None:
    # The server answers, then closes the connection as the second request arrives on it
    # without answering: the probe must retry once on a fresh connection, not fail.
    raw.scripts["ka"] = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive"
                         b"\r\n\r\nok", "next", "close"]
    target = make_target(raw.url("ka"), "600ms", keepalive=True)
    first = await prober.probe(target)
    second = await prober.probe(target)
    assert first.outcome is second.outcome is Outcome.SUCCESS, second
    assert raw.connections == 2
    assert second.phases["connect"] > 0  # the retry made a new connection
    assert raw.requests[0].count(b"Connection: keep-alive") == 1


# While idle, the server closed the connection; or it sent bytes that would be read as the
# next response. Either way the next probe must take a fresh connection.
IDLE_TROUBLE: list[tuple[str, Script]] = [
    ("ka-closed-while-idle", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.01,
                              "close"]),
    ("ka-spoke-out-of-turn", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.02,
                              b"HTTP/1.1 500 Stray\r\nContent-Length: 0\r\n\r\n", "hang"]),
]


@pytest.mark.parametrize(("name", "script"), IDLE_TROUBLE, ids=[c[0] for c in IDLE_TROUBLE])
async def test_kept_alive_connection_in_trouble_while_idle_is_not_reused(
        raw: RawServer, prober: HTTPProber, name: str, script: Script) -> None:
    raw.scripts[name] = script
    target = make_target(raw.url(name), "600ms", keepalive=True)
    assert (await prober.probe(target)).outcome is Outcome.SUCCESS
    await asyncio.sleep(0.1)
    second = await prober.probe(target)
    assert second.outcome is Outcome.SUCCESS, second
    assert second.status_code == 200
    assert raw.connections == 2


# Deadlines that must leave nothing open: (name, URL path and scheme, scripts, the phase the
# deadline hits, connections per probe).
DEADLINE_CASES: list[tuple[str, str, dict[str, Script], str, int]] = [
    # the raw server never answers a ClientHello: the deadline cancels the handshake
    ("tls-handshake-never-ends", "https:/never", {}, "tls", 1),
    # a redirect to a server that never answers: the second hop's connection must be released
    ("after-a-redirect", "http:/to-silence", {
        "to-silence": [b"HTTP/1.1 302 Found\r\nLocation: /silence-2\r\n"
                       b"Content-Length: 0\r\n\r\n"],
        "silence-2": ["hang"]}, "processing", 2),
]


@pytest.mark.parametrize(("name", "where", "scripts", "phase", "hops"), DEADLINE_CASES,
                         ids=[c[0] for c in DEADLINE_CASES])
async def test_deadline_cuts_the_probe_and_leaks_nothing(
        raw: RawServer, prober: HTTPProber, name: str, where: str, scripts: dict[str, Script],
        phase: str, hops: int) -> None:
    raw.scripts.update(scripts)
    scheme, path = where.split(":")
    target = make_target(f"{scheme}://127.0.0.1:{raw.port}{path}", "250ms")
    await prober.prepare((target,))
    baseline = open_fds()
    for _ in range(3):
        result = await prober.probe(target)
        assert result.outcome is Outcome.TIMEOUT, result
        assert f"during {phase}" in result.detail, (name, result.detail)
        assert result.phases[phase] > 0.1
    await assert_fds_back_to(baseline)
    assert raw.connections == 3 * hops
