"""The HTTP probe: one request, phase timings, checks; the answer is a :class:`ProbeResult`.

Probe failures are data: network, TLS and HTTP problems come back as a result with an outcome.
Only a bug in this code escapes (and the scheduler turns it into outcome ``crash``).

The request goes out over a bare asyncio connection (``exporter.probes.wire``, HTTP/1.1 parsed
by llhttp), not aiohttp's ``ClientSession``: about a quarter of the CPU per probe (see
``wire``'s docstring and ``bench/probe_cost.py``). Each phase is timed where it happens, no
trace hooks needed:

- ``resolve``: DNS lookup (``loop.getaddrinfo``, no cache; 0 for IP literals and reused
  connections)
- ``connect``: TCP handshake (until the loop reports the connection made)
- ``tls``: TLS handshake: the socket is connected first, then handed to the loop for the
  handshake, so tls = connection ready - TCP connected (measured, not derived)
- ``processing``: request sent until the response head is parsed (server think time)
- ``transfer``: response head until the body is read (or the cap is reached)

All but ``transfer`` are summed over redirect hops; ``transfer`` is the last hop's.
Addresses from DNS are tried in order until one connects (no happy eyeballs: a prober should
see the first address fail, not hide it).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from typing import Any

from cryptography import x509
from yarl import URL

from exporter import __version__
from exporter.config import HTTPSettings, Target, TLSConfig, format_duration
from exporter.outcome import (
    PHASES,
    ConnectFailure,
    DNSFailure,
    HTTPFailure,
    NetworkFailure,
    Outcome,
    ProbeError,
    ProbeResult,
    ProbeValidationError,
    TLSFailure,
    classify,
    describe,
)
from exporter.probes.wire import Exchange

USER_AGENT = f"vantage-exporter/{__version__}"
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: A kept-alive connection idle longer than this is closed rather than reused (servers
#: commonly drop idle connections after 60 s or more).
KEEPALIVE_IDLE = 30.0
_MAX_IDLE_PER_ORIGIN = 4
#: Inflate at most this much per step: a bomb's transient output stays small, not the cap.
_INFLATE_STEP = 64 * 1024
_perf: Callable[[], float] = time.perf_counter


class _Timing:
    """Phase durations of one probe: each ``enter`` closes the phase in progress."""

    __slots__ = ("mark", "peer_certs", "phase", "phases")

    def __init__(self, now: float) -> None:
        self.mark = now  # start of the phase in progress
        self.phase = "processing"  # until a connection is being made (as on a reused one)
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.peer_certs: list[bytes] = []  # DER, of the last TLS connection made

    def enter(self, phase: str, now: float) -> None:
        self.phases[self.phase] += now - self.mark
        self.phase, self.mark = phase, now


class _Plan:
    """What a request to one URL looks like, worked out once per target (not per probe)."""

    __slots__ = ("head_only", "host", "https", "ip_family", "method", "origin", "port",
                 "request", "server_hostname", "sink_for", "url")

    def __init__(self, url: URL, h: HTTPSettings, method: str, body: str | None,
                 send_auth: bool = True) -> None:
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise HTTPFailure(f"cannot probe {str(url)[:200]!r}: not an http(s) URL with a host")
        self.url = url
        self.method = method
        self.https = url.scheme == "https"
        self.host = url.raw_host  # IDNA-encoded, IPv6 without brackets
        self.port = url.port or (443 if self.https else 80)
        try:
            self.ip_family: int = (socket.AF_INET6 if ipaddress.ip_address(self.host).version
                                   == 6 else socket.AF_INET)
        except ValueError:
            self.ip_family = 0  # a name: resolved on every new connection
        self.server_hostname = h.tls.server_name or self.host
        self.head_only = method == "HEAD"
        self.sink_for = None if self.head_only else _sink_factory(h)
        self.origin = (self.https, self.host, self.port, h.tls)
        self.request = _request_bytes(url, h, method, body, host=self.host,
                                      send_auth=send_auth)


def _plan_for(target: Target) -> _Plan | str:
    """The target's plan, or why its URL cannot be probed."""
    try:
        return _Plan(URL(target.url), target.http, target.http.method, target.http.body)
    except HTTPFailure as exc:
        return str(exc)
    except ValueError as exc:
        return f"cannot probe {target.url[:200]!r}: {exc}"


def _request_bytes(url: URL, h: HTTPSettings, method: str, body: str | None, *, host: str,
                   send_auth: bool) -> bytes:
    host_header = f"[{host}]" if ":" in host else host
    if not url.is_default_port():
        host_header += f":{url.port}"
    fields = {
        "host": ("Host", host_header),
        "user-agent": ("User-Agent", USER_AGENT),
        "accept": ("Accept", "*/*"),
        # decompressed by _Body, bounded by max_body_bytes: only what zlib can bound
        "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
        "connection": ("Connection", "keep-alive" if h.keepalive else "close"),
    }
    auth = None
    if h.bearer_token is not None:
        auth = f"Bearer {h.bearer_token}"
    elif h.basic_auth is not None:
        auth = _basic(h.basic_auth.username, h.basic_auth.password)
    elif url.raw_user is not None:
        auth = _basic(url.user or "", url.password or "")
    if auth is not None and send_auth:
        fields["authorization"] = ("Authorization", auth)
    for name, value in h.headers:  # configured headers win, Host included (virtual hosts)
        if name.lower() == "authorization" and not send_auth:
            continue
        fields[name.lower()] = (name, value)
    data = b"" if body is None else body.encode()
    if body is not None or method in ("POST", "PUT", "PATCH"):
        fields["content-length"] = ("Content-Length", str(len(data)))
    lines = [f"{method} {url.raw_path_qs or '/'} HTTP/1.1\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in fields.values()]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", errors="replace") + data


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Hop:
    """The request in progress: its plan, exchange and connection (the next redirect's, once
    a redirect is followed)."""

    __slots__ = ("exchange", "plan", "transport")

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.exchange: Exchange | None = None
        self.transport: asyncio.Transport | None = None


class HTTPProber:
    """Owns TLS contexts and kept-alive connections; ``await probe(target)`` runs one probe.

    Use as ``async with HTTPProber() as prober:`` so idle connections are always closed.
    """

    def __init__(self) -> None:
        self._contexts: dict[TLSConfig, ssl.SSLContext] = {}
        self._expiry_cache: dict[bytes, float] = {}
        self._plans: dict[int, tuple[Target, _Plan | str]] = {}
        self._idle: dict[tuple[object, ...], list[tuple[asyncio.Transport, float]]] = {}

    async def __aenter__(self) -> HTTPProber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for transport, _ in conns:
                transport.abort()  # (why abort: see _release)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run before the loop ends

    async def prepare(self, targets: tuple[Target, ...]) -> None:
        """Build the TLS contexts the targets need (in a thread: they read files) and forget
        the request plans of targets that are gone."""
        missing = {t.http.tls for t in targets} - self._contexts.keys()
        if missing:
            built = await asyncio.to_thread(lambda: {tls: tls.ssl_context() for tls in missing})
            self._contexts.update(built)
        # Request plans too, in a thread (URL parsing, ~10 us a target), so that no probe pays
        # for it and a 10,000-target load does not hold the loop in one piece.
        old = self._plans
        new_targets = [t for t in targets if old.get(id(t), (None,))[0] is not t]
        plans = await asyncio.to_thread(lambda: [_plan_for(t) for t in new_targets])
        self._plans = {id(t): e for t in targets if (e := old.get(id(t))) and e[0] is t}
        self._plans.update((id(t), (t, p)) for t, p in zip(new_targets, plans, strict=True))

    async def _context(self, tls: TLSConfig) -> ssl.SSLContext:
        ctx = self._contexts.get(tls)
        if ctx is None:
            ctx = self._contexts[tls] = await asyncio.to_thread(tls.ssl_context)
        return ctx

    def _plan(self, target: Target) -> _Plan:
        # Keyed by identity: hashing a frozen Target would walk all its fields on every probe.
        entry = self._plans.get(id(target))
        if entry is None or entry[0] is not target:  # a target prepare() has not seen
            entry = self._plans[id(target)] = (target, _plan_for(target))
        if isinstance(entry[1], str):  # config validation keeps such URLs out; say why
            raise HTTPFailure(entry[1])
        return entry[1]

    async def probe(self, target: Target) -> ProbeResult:
        start = _perf()
        timing = _Timing(start)
        hop: _Hop | None = None
        try:
            async with asyncio.timeout(target.timeout):
                hop = _Hop(self._plan(target))
                await self._follow(target, hop, timing)
                await self._check(target, hop)
            outcome, detail = Outcome.SUCCESS, ""
        except TimeoutError:
            outcome = Outcome.TIMEOUT
            detail = (f"deadline of {format_duration(target.timeout)} passed during "
                      f"{timing.phase}")
        except ProbeError as exc:
            outcome, detail = exc.outcome, describe(exc)
        except OSError as exc:  # e.g. a write on a connection that just broke
            outcome, detail = classify(exc), describe(exc)
        finally:
            if hop is not None:
                self._release(target, hop)
        end = _perf()
        timing.enter(timing.phase, end)
        ex = hop.exchange if hop is not None else None  # the hop the probe ended on
        status = ex.status if ex is not None else 0
        final_url = str(hop.plan.url) if hop is not None and ex is not None else ""
        return ProbeResult(
            outcome=outcome,
            duration=end - start,
            detail=detail,
            status_code=status,
            phases=timing.phases,
            tls_cert_expiry=self._cert_expiry(timing.peer_certs),
            final_url=final_url,
        )

    async def _follow(self, target: Target, hop: _Hop, timing: _Timing) -> None:
        """Send the request, following redirects, until ``hop`` holds the final head. The hop
        is reused from one redirect to the next, so whatever connection is open when something
        fails is the one the caller releases."""
        h = target.http
        redirects = 0
        while True:
            await self._send(target, hop, timing)
            ex = hop.exchange
            assert ex is not None
            timing.enter("transfer", ex.headers_at)
            location = next((v for n, v in ex.headers if n == "location"), None)
            if not (h.follow_redirects and ex.status in _REDIRECTS and location is not None):
                return
            redirects += 1
            if redirects > h.max_redirects:
                raise HTTPFailure(f"more than {h.max_redirects} redirects "
                                  f"(last: status {ex.status} to {location[:200]})")
            plan = hop.plan
            try:
                url = plan.url.join(URL(location))
            except ValueError as exc:
                raise HTTPFailure(f"status {ex.status} redirects to an invalid URL "
                                  f"{location[:200]!r}") from exc
            method, body = plan.method, h.body
            if ex.status == 303 or (ex.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
            same_origin = (url.scheme, url.raw_host, url.port) == \
                (plan.url.scheme, plan.url.raw_host, plan.url.port)
            self._release(target, hop)  # the redirect's own body is not read
            hop.plan = _Plan(url, h, method, body, send_auth=same_origin)
            hop.exchange = None
            timing.enter("processing", _perf())

    async def _send(self, target: Target, hop: _Hop, timing: _Timing) -> None:
        plan = hop.plan
        loop = asyncio.get_running_loop()
        reused = self._take_idle(plan) if target.http.keepalive else None
        if reused is not None:
            ex = Exchange(loop, plan.sink_for, plan.head_only)
            reused.set_protocol(ex)
            ex.transport = hop.transport = reused
            hop.exchange = ex
            timing.enter("processing", _perf())
            reused.write(plan.request)
            try:
                await ex.head()
                return
            except NetworkFailure:
                if ex.status or ex.headers:
                    raise
                # the server closed the idle connection as we used it: one fresh try
                reused.abort()
                hop.transport = None
        ex = Exchange(loop, plan.sink_for, plan.head_only)
        hop.exchange = ex
        hop.transport = await self._connect(plan, target, ex, timing)
        timing.enter("processing", ex.connected_at)
        hop.transport.write(plan.request)
        await ex.head()

    async def _connect(self, plan: _Plan, target: Target, ex: Exchange, timing: _Timing
                       ) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        addrs: list[tuple[int, Any]]
        if plan.ip_family:
            addrs = [(plan.ip_family, (plan.host, plan.port))]
        else:
            timing.enter("resolve", _perf())
            try:
                infos = await loop.getaddrinfo(plan.host, plan.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise DNSFailure(f"cannot resolve {plan.host!r}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from exc
            addrs = [(family, addr) for family, _, _, _, addr in infos]
            if not addrs:
                raise DNSFailure(f"cannot resolve {plan.host!r}: no addresses")
        timing.enter("connect", _perf())
        ctx = await self._context(target.http.tls) if plan.https else None
        last: OSError | None = None
        for family, addr in addrs:
            if ctx is None:
                try:
                    transport, _ = await loop.create_connection(lambda: ex, addr[0], addr[1])
                except OSError as exc:
                    last = exc
                    continue
                return transport
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return await self._handshake(plan, ctx, sock, ex, timing)
        ip = f"[{addrs[-1][1][0]}]" if addrs[-1][0] == socket.AF_INET6 else addrs[-1][1][0]
        assert last is not None
        tried = f" (all {len(addrs)} addresses of {plan.host} failed)" if len(addrs) > 1 else ""
        raise ConnectFailure(f"cannot connect to {ip}:{plan.port}: "
                             f"{last.strerror or last}{tried}") from last

    async def _handshake(self, plan: _Plan, ctx: ssl.SSLContext, sock: socket.socket,
                         ex: Exchange, timing: _Timing) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        timing.enter("tls", _perf())
        # From here on the loop owns the socket: it closes it on failure or cancellation.
        try:
            transport, _ = await loop.create_connection(
                lambda: ex, sock=sock, ssl=ctx, server_hostname=plan.server_hostname)
        except ssl.SSLError as exc:  # certificate verification errors included
            raise TLSFailure(f"TLS handshake with {plan.server_hostname} failed: "
                             f"{getattr(exc, 'verify_message', None) or exc}") from exc
        except OSError as exc:
            raise TLSFailure(f"connection broke during the TLS handshake: "
                             f"{exc.strerror or exc}") from exc
        timing.peer_certs = _peer_certs(transport.get_extra_info("ssl_object"))
        return transport

    def _take_idle(self, plan: _Plan) -> asyncio.Transport | None:
        conns = self._idle.get(plan.origin)
        now = _perf()
        while conns:
            transport, since = conns.pop()
            proto = transport.get_protocol()
            if (transport.is_closing() or now - since > KEEPALIVE_IDLE
                    or not isinstance(proto, Exchange) or proto.lost):
                transport.abort()  # (why abort: see _release)
                continue
            return transport
        return None

    def _release(self, target: Target, hop: _Hop) -> None:
        """Keep the connection for the next probe (keep-alive) or close it."""
        transport, ex = hop.transport, hop.exchange
        hop.transport = None
        if transport is None:
            return
        if target.http.keepalive and ex is not None and ex.reusable \
                and not transport.is_closing():
            conns = self._idle.setdefault(hop.plan.origin, [])
            if len(conns) < _MAX_IDLE_PER_ORIGIN:
                conns.append((transport, _perf()))
                return
        # abort, not close: the exchange is over (or broken) and there is nothing to flush, and
        # a TLS close() would wait for the peer's close_notify, holding the descriptor up to
        # 30 s for each probe of a server that never sends one.
        transport.abort()

    async def _check(self, target: Target, hop: _Hop) -> None:
        h = target.http
        ex = hop.exchange
        assert ex is not None
        if not h.status_ok(ex.status):
            reason = ex.reason.decode("latin-1", errors="replace").strip()
            raise HTTPFailure(f"status {ex.status} {reason}".strip() +
                              " is not in valid_status_codes")
        _check_headers(h, hop.plan, ex)
        if not hop.plan.head_only:
            await ex.complete()
            body = ex.sink if isinstance(ex.sink, _Body) else None
            if body is not None:
                body.finish()
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


def _peer_certs(sslobj: ssl.SSLObject | None) -> list[bytes]:
    """DER certificates the peer sent: the whole chain on Python >= 3.13, else the leaf."""
    if sslobj is None:
        return []
    chain = getattr(sslobj, "get_unverified_chain", None)
    if chain is not None:
        return [c if isinstance(c, bytes) else c.public_bytes() for c in chain() or ()]
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _check_headers(h: HTTPSettings, plan: _Plan, ex: Exchange) -> None:
    if h.fail_if_not_ssl and not plan.https:
        raise ProbeValidationError(f"final URL {plan.url} is not HTTPS (fail_if_not_ssl)")
    for match in h.fail_if_header_matches:
        for name, value in ex.headers:
            if name == match.header and match.regexp.search(value):
                raise ProbeValidationError(
                    f"header {match.header}: {value[:80]!r} matches {match.regexp.pattern!r}")


def _sink_factory(h: HTTPSettings) -> Callable[[list[tuple[str, str]]], _Body]:
    keep = bool(h.fail_if_body_matches_regexp or h.fail_if_body_not_matches_regexp)
    cap = h.max_body_bytes

    def sink_for(headers: list[tuple[str, str]]) -> _Body:
        encoding = next((v for n, v in headers if n == "content-encoding"), "")
        return _Body(encoding, cap, keep)

    return sink_for


class _Body:
    """Takes a body as it arrives (called with each chunk), decompressing gzip/deflate itself
    with ``max_length`` so that no more than ``max_body_bytes`` (+1) is ever inflated: a zip
    bomb costs at most the cap in memory. Raising stops the transfer (the connection is then
    dropped, not reused)."""

    __slots__ = ("_fed", "_raw_deflate_ok", "_z", "cap", "keep", "parts", "total")

    def __init__(self, encoding: str, cap: int, keep: bool) -> None:
        self.cap, self.keep, self.total = cap, keep, 0
        self.parts: list[bytes] = []
        encoding = encoding.strip().lower()
        # wbits 47: zlib or gzip header, detected; -15: raw deflate (some servers send it)
        self._z = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None
        self._raw_deflate_ok = encoding == "deflate"
        self._fed = False

    def __call__(self, data: bytes) -> None:
        if self._z is None:
            self._add(data)
            return
        self._fed = self._fed or bool(data)
        while data:
            try:
                out = self._z.decompress(data, min(self.cap - self.total + 1, _INFLATE_STEP))
            except zlib.error as exc:
                if self._raw_deflate_ok and self.total == 0:
                    self._raw_deflate_ok = False
                    self._z = zlib.decompressobj(-15)
                    continue
                raise NetworkFailure(f"cannot decompress the body: {exc}") from exc
            self._raw_deflate_ok = False
            self._add(out)
            data = self._z.unconsumed_tail

    def _add(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.cap:
            raise ProbeValidationError(f"body larger than max_body_bytes ({self.cap} bytes)")
        if self.keep:
            self.parts.append(data)

    def finish(self) -> None:
        """The body is complete: a compressed one must have reached its end marker."""
        if self._z is not None and self._fed and not self._z.eof:
            raise NetworkFailure("the compressed body ends before its end marker (truncated)")

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", errors="replace")


def _check_body(h: HTTPSettings, body: _Body | None) -> None:
    if not (h.fail_if_body_matches_regexp or h.fail_if_body_not_matches_regexp):
        return
    text = body.text() if body is not None else ""
    for rx in h.fail_if_body_matches_regexp:
        if rx.search(text):
            raise ProbeValidationError(f"body matches {rx.pattern!r}")
    for rx in h.fail_if_body_not_matches_regexp:
        if not rx.search(text):
            raise ProbeValidationError(f"body does not match {rx.pattern!r}")


__all__ = ["KEEPALIVE_IDLE", "USER_AGENT", "HTTPProber"]
