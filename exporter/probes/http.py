"""The HTTP probe: one request, phase timings, checks; the answer is a :class:`ProbeResult`.

Probe failures are data: network, TLS and HTTP problems come back as a result with an outcome.
Only a bug in this code escapes (and the scheduler turns it into outcome ``crash``).

Phases (seconds, summed over redirect hops except ``transfer``, which is the last hop's):

- ``resolve``: DNS lookup (0 for IP literals and reused connections)
- ``connect``: TCP handshake
- ``tls``: TLS handshake. aiohttp has no trace hook for it, so :class:`_TimingConnector`
  (a ``TCPConnector`` subclass) connects the socket itself, notes the time, then lets the loop
  run the handshake over that socket: tls = connection ready - TCP connected.
- ``processing``: request sent until response headers received (server think time)
- ``transfer``: response headers until the body is read (or the cap is reached)
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import ssl
import time
import zlib
from typing import Any

import aiohappyeyeballs
import aiohttp
from aiohttp import client_exceptions as cex
from aiohttp.http_exceptions import ContentEncodingError
from cryptography import x509

from exporter import __version__
from exporter.config import HTTPSettings, Target, TLSConfig, format_duration
from exporter.outcome import (
    Outcome,
    ProbeResult,
    ProbeValidationError,
    classify,
    describe,
)

USER_AGENT = f"vantage-exporter/{__version__}"
_READ_CHUNK = 64 * 1024
_DEFAULT_TLS = TLSConfig()
# We decompress ourselves (see _Body), so we only offer what zlib can bound.
_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


class _Timing:
    """Timestamps of one probe, filled in by aiohttp trace callbacks and the connector."""

    __slots__ = ("mark", "peer_certs", "phase", "phases")

    def __init__(self, now: float) -> None:
        self.mark = now  # start of the phase in progress
        self.phase = "processing"  # until a connection is being created
        self.phases = dict.fromkeys(("resolve", "connect", "tls", "processing", "transfer"), 0.0)
        self.peer_certs: list[bytes] = []  # DER, of the last TLS connection made

    def enter(self, phase: str, now: float) -> None:
        """Close the phase in progress (adding its time) and start ``phase``."""
        self.phases[self.phase] += now - self.mark
        self.phase, self.mark = phase, now


_CURRENT: contextvars.ContextVar[_Timing | None] = contextvars.ContextVar("vantage_timing",
                                                                        default=None)


def _timing(ctx: Any) -> _Timing | None:
    t = getattr(ctx, "trace_request_ctx", None)
    return t if isinstance(t, _Timing) else None


async def _on_dns_start(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        t.enter("resolve", time.perf_counter())


async def _on_dns_end(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        t.enter("connect", time.perf_counter())


async def _on_conn_start(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        t.enter("connect", time.perf_counter())


async def _on_conn_end(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        t.enter("processing", time.perf_counter())


async def _on_request_start(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        # A redirect hop (or a reused connection) starts here; until a connection is being
        # created the time counts as processing (request on an existing connection).
        t.enter("processing", time.perf_counter())


async def _on_headers(_s: Any, ctx: Any, _p: Any) -> None:
    if t := _timing(ctx):
        t.enter("transfer", time.perf_counter())


def _trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_request_start.append(_on_request_start)
    tc.on_dns_resolvehost_start.append(_on_dns_start)
    tc.on_dns_resolvehost_end.append(_on_dns_end)
    tc.on_connection_create_start.append(_on_conn_start)
    tc.on_connection_create_end.append(_on_conn_end)
    tc.on_request_redirect.append(_on_headers)
    tc.on_request_end.append(_on_headers)
    return tc


class _TimingConnector(aiohttp.TCPConnector):
    """Splits TCP connect from the TLS handshake for the ``tls`` phase (see module doc)."""

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[Any],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 -- aiohttp's signature
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        timing = _CURRENT.get()
        if timing is None or not kwargs.get("ssl"):
            return await super()._wrap_create_connection(
                *args, addr_infos=addr_infos, req=req, timeout=timeout,
                client_error=client_error, **kwargs)
        try:
            sock = await aiohappyeyeballs.start_connection(
                addr_infos=addr_infos,
                local_addr_infos=self._local_addr_infos,
                happy_eyeballs_delay=self._happy_eyeballs_delay,
                interleave=self._interleave,
                loop=self._loop,
                socket_factory=self._socket_factory,
            )
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        timing.enter("tls", time.perf_counter())
        # From here on the loop owns the socket (as in aiohttp's own code): it closes it on
        # failure, and closing it ourselves would pull the fd from under a TLS handshake.
        try:
            transport, proto = await self._loop.create_connection(*args, **kwargs, sock=sock)
        except cex.cert_errors as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except cex.ssl_errors as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        timing.peer_certs = _peer_certs(transport.get_extra_info("ssl_object"))
        return transport, proto


def _peer_certs(sslobj: ssl.SSLObject | None) -> list[bytes]:
    """DER certificates the peer sent: the whole chain on Python >= 3.13, else the leaf."""
    if sslobj is None:
        return []
    chain = getattr(sslobj, "get_unverified_chain", None)
    if chain is not None:
        return [c if isinstance(c, bytes) else c.public_bytes() for c in chain() or ()]
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class HTTPProber:
    """Owns the HTTP client sessions; ``await probe(target)`` runs one probe.

    Use as ``async with HTTPProber() as prober:`` so sessions are always closed.
    """

    def __init__(self) -> None:
        self._fresh: aiohttp.ClientSession | None = None
        self._keepalive: aiohttp.ClientSession | None = None
        self._contexts: dict[TLSConfig, ssl.SSLContext] = {}
        self._expiry_cache: dict[bytes, float] = {}

    async def __aenter__(self) -> HTTPProber:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        trace = [_trace_config()]
        # Fresh connection per probe: measures connect/TLS every time. limit=0 because our own
        # semaphore bounds concurrency: a pool queue would count as connect time (DESIGN traps).
        # No DNS cache, so DNS failures and changes are seen at once.
        self._fresh = aiohttp.ClientSession(
            connector=_TimingConnector(limit=0, force_close=True, use_dns_cache=False),
            timeout=_NO_TIMEOUT, trace_configs=trace, auto_decompress=False,
            headers=_HEADERS, cookie_jar=aiohttp.DummyCookieJar())
        self._keepalive = aiohttp.ClientSession(
            connector=_TimingConnector(limit=0, use_dns_cache=True, ttl_dns_cache=10,
                                       keepalive_timeout=60),
            timeout=_NO_TIMEOUT, trace_configs=trace, auto_decompress=False,
            headers=_HEADERS, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        for session in (self._fresh, self._keepalive):
            if session is not None:
                await session.close()
        self._fresh = self._keepalive = None

    async def prepare(self, targets: tuple[Target, ...]) -> None:
        """Build the TLS contexts the targets need, in a thread (they read files)."""
        missing = {t.http.tls for t in targets} - self._contexts.keys()
        if missing:
            built = await asyncio.to_thread(lambda: {tls: tls.ssl_context() for tls in missing})
            self._contexts.update(built)

    async def _context(self, tls: TLSConfig) -> ssl.SSLContext:
        ctx = self._contexts.get(tls)
        if ctx is None:
            ctx = self._contexts[tls] = await asyncio.to_thread(tls.ssl_context)
        return ctx

    async def probe(self, target: Target) -> ProbeResult:
        start = time.perf_counter()
        timing = _Timing(start)
        token = _CURRENT.set(timing)
        result: dict[str, Any] = {}
        try:
            async with asyncio.timeout(target.timeout):
                await self._request(target, timing, result)
            outcome, detail = Outcome.SUCCESS, ""
        except ProbeValidationError as exc:
            outcome, detail = Outcome.VALIDATION_ERROR, str(exc)
        except TimeoutError:
            outcome = Outcome.TIMEOUT
            detail = (f"deadline of {format_duration(target.timeout)} passed during "
                      f"{timing.phase}")
        except aiohttp.ClientResponseError as exc:
            outcome, detail = classify(exc), describe(exc)
            if outcome is Outcome.HTTP_ERROR and isinstance(exc, aiohttp.TooManyRedirects):
                detail = f"more than {target.http.max_redirects} redirects"
        except (aiohttp.ClientError, OSError, aiohttp.http_exceptions.HttpProcessingError) as exc:
            outcome, detail = classify(exc), describe(exc)
            if outcome is Outcome.CRASH:
                raise
        finally:
            _CURRENT.reset(token)
        end = time.perf_counter()
        timing.enter(timing.phase, end)
        if result.get("http_error"):
            outcome, detail = Outcome.HTTP_ERROR, result["http_error"]
        return ProbeResult(
            outcome=outcome,
            duration=end - start,
            detail=detail,
            status_code=result.get("status", 0),
            phases=timing.phases,
            tls_cert_expiry=self._cert_expiry(timing.peer_certs),
            final_url=result.get("url", ""),
        )

    async def _request(self, target: Target, timing: _Timing, result: dict[str, Any]) -> None:
        h = target.http
        session = self._keepalive if h.keepalive else self._fresh
        if session is None:
            raise RuntimeError("HTTPProber used before start()")
        headers = dict(h.headers)
        if h.bearer_token is not None:
            headers["Authorization"] = f"Bearer {h.bearer_token}"
        if h.basic_auth is not None:
            creds = f"{h.basic_auth.username}:{h.basic_auth.password}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(creds).decode()}"
        # Default settings: aiohttp's own verified context (errors then read "ssl:default").
        ssl_ctx: ssl.SSLContext | bool = True if h.tls == _DEFAULT_TLS else \
            await self._context(h.tls)
        async with session.request(
            h.method, target.url, headers=headers, data=h.body,
            allow_redirects=h.follow_redirects, max_redirects=h.max_redirects,
            ssl=ssl_ctx, server_hostname=h.tls.server_name, trace_request_ctx=timing,
        ) as resp:
            result["status"] = resp.status
            result["url"] = str(resp.url)
            if not h.status_ok(resp.status):
                result["http_error"] = f"status {resp.status} {resp.reason or ''}".strip() + \
                    " is not in valid_status_codes"
                return
            _check_headers(h, resp)
            if h.method != "HEAD":
                body = await _read_capped(resp, h)
                _check_body(h, body)

    def _cert_expiry(self, ders: list[bytes]) -> float:
        return min((e for e in map(self._expiry, ders) if e), default=0.0)

    def _expiry(self, der: bytes) -> float:
        cached = self._expiry_cache.get(der)
        if cached is None:
            try:
                cached = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
            except ValueError:
                cached = 0.0
            if len(self._expiry_cache) > 10_000:
                self._expiry_cache.clear()
            self._expiry_cache[der] = cached
        return cached


def _check_headers(h: HTTPSettings, resp: aiohttp.ClientResponse) -> None:
    if h.fail_if_not_ssl and resp.url.scheme != "https":
        raise ProbeValidationError(f"final URL {resp.url} is not HTTPS (fail_if_not_ssl)")
    for match in h.fail_if_header_matches:
        for value in resp.headers.getall(match.header, ()):
            if match.regexp.search(value):
                raise ProbeValidationError(
                    f"header {match.header}: {value[:80]!r} matches {match.regexp.pattern!r}")


class _Body:
    """Collects a body, decompressing gzip/deflate itself with ``max_length`` so that no more
    than ``max_body_bytes`` (+1) is ever inflated: a zip bomb costs at most the cap in memory.
    (aiohttp's own decompression inflates whole network chunks, 1000:1 for a bomb.)"""

    def __init__(self, encoding: str, cap: int, keep: bool) -> None:
        self.cap, self.keep, self.total = cap, keep, 0
        self.parts: list[bytes] = []
        encoding = encoding.strip().lower()
        # wbits 47: zlib or gzip header, detected; -15: raw deflate (some servers send it)
        self._z = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None
        self._raw_deflate_ok = encoding == "deflate"

    def feed(self, data: bytes) -> None:
        if self._z is None:
            self._add(data)
            return
        while data:
            try:
                out = self._z.decompress(data, self.cap - self.total + 1)
            except zlib.error as exc:
                if self._raw_deflate_ok and self.total == 0:
                    self._raw_deflate_ok = False
                    self._z = zlib.decompressobj(-15)
                    continue
                raise ContentEncodingError(f"cannot decompress the body: {exc}") from exc
            self._raw_deflate_ok = False
            self._add(out)
            data = self._z.unconsumed_tail

    def _add(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.cap:
            raise ProbeValidationError(f"body larger than max_body_bytes ({self.cap} bytes)")
        if self.keep:
            self.parts.append(data)


async def _read_capped(resp: aiohttp.ClientResponse, h: HTTPSettings) -> bytes:
    """Read the body, stopping as soon as its decompressed size passes max_body_bytes."""
    keep = bool(h.fail_if_body_matches_regexp or h.fail_if_body_not_matches_regexp)
    body = _Body(resp.headers.get("Content-Encoding", ""), h.max_body_bytes, keep)
    try:
        while chunk := await resp.content.read(_READ_CHUNK):
            body.feed(chunk)
    except ProbeValidationError:
        resp.close()  # stop the transfer; the connection is not reused
        raise
    return b"".join(body.parts)


def _check_body(h: HTTPSettings, body: bytes) -> None:
    if not (h.fail_if_body_matches_regexp or h.fail_if_body_not_matches_regexp):
        return
    text = body.decode("utf-8", errors="replace")
    for rx in h.fail_if_body_matches_regexp:
        if rx.search(text):
            raise ProbeValidationError(f"body matches {rx.pattern!r}")
    for rx in h.fail_if_body_not_matches_regexp:
        if not rx.search(text):
            raise ProbeValidationError(f"body does not match {rx.pattern!r}")


__all__ = ["USER_AGENT", "HTTPProber"]
