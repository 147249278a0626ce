"""HTTP/1.1 on the wire: one response read from a connection the event loop owns.

Why not aiohttp's client here: a fresh-connection probe through ``ClientSession`` costs about
230 us of CPU on this stack, most of it machinery a prober does not use (cookie jars, the
connection pool, stream readers, trace signals); the same exchange through this module costs
about 60 us (``bench/probe_cost.py``'s bare-uvloop and bare-wire rows measure both). A prober
spends its life doing exactly this exchange, so it speaks HTTP/1.1 itself, with llhttp (through
``httptools``, the parser of uvloop's authors) doing the parsing: framing (Content-Length,
chunked, read to close), validation, and errors on anything that is not HTTP.

:class:`Exchange` is the protocol of one request/response. Its callbacks run inside
``data_received``, so the body is fed straight into the caller's sink (decompression and the
size cap) with no buffering and no task switch per chunk. The probe awaits
:meth:`Exchange.head` and :meth:`Exchange.complete`; failures come back as
:class:`~exporter.outcome.ProbeError` subclasses (``NetworkFailure``, ``TLSFailure``) or as what
the sink raised.

    >>> # ex = Exchange(loop, lambda headers: body.append, head_only=False)
    >>> # transport, _ = await loop.create_connection(lambda: ex, "127.0.0.1", 80)
    >>> # transport.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    >>> # await ex.head(); ex.status -> 200; await ex.complete()
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import httptools

from exporter.outcome import NetworkFailure, TLSFailure

#: The response head (status line and headers) may not exceed this: a server streaming endless
#: headers must not grow our memory. Larger than aiohttp's 8 KiB per field, so what real
#: servers send (big cookies, CSP headers) passes.
MAX_HEAD_BYTES = 64 * 1024

_HEAD_TOO_LARGE = f"response head larger than {MAX_HEAD_BYTES // 1024} KiB"
_perf: Callable[[], float] = time.perf_counter
_NO_FRAMING = (204, 304)

#: Given the response headers, returns where the body's bytes go (it may raise to stop).
SinkFactory = Callable[[list[tuple[str, str]]], Callable[[bytes], None]]


class _Done(Exception):
    """Raised from a parser callback to stop llhttp once our response is complete."""


class Exchange(asyncio.Protocol):
    """One HTTP/1.1 response on one connection (a kept-alive connection gets a new one per
    request via ``transport.set_protocol``)."""

    __slots__ = (
        "_close_delimited",
        "_field_bytes",
        "_head_bytes",
        "_interim",
        "_keep_alive",
        "_loop",
        "_parser",
        "_sink_for",
        "_waiter",
        "complete_done",
        "connected_at",
        "error",
        "head_done",
        "head_only",
        "headers",
        "headers_at",
        "lost",
        "reason",
        "sink",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sink_for: SinkFactory | None,
                 head_only: bool = False) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        # Bare LF line ends (old and embedded servers): curl, browsers and Go's client (hence
        # blackbox_exporter) accept them, so a prober must not call that server broken.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._sink_for = sink_for
        self.sink: Callable[[bytes], None] | None = None  # made when the head is in
        self._waiter: asyncio.Future[None] | None = None
        self._head_bytes = 0  # raw bytes read before the head was complete
        self._field_bytes = 0  # header names and values parsed
        self._interim = False
        self._keep_alive = False
        self._close_delimited = False
        self.head_only = head_only  # a response to HEAD: no body follows, whatever it says
        self.transport: asyncio.Transport | None = None
        self.connected_at = 0.0
        self.headers_at = 0.0
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []  # (lower-case name, value), in order
        self.head_done = False
        self.complete_done = False
        self.lost = False  # the connection is gone, or unfit for another request
        self.error: BaseException | None = None

    # -- what the probe awaits ----------------------------------------------------------------

    async def head(self) -> None:
        """Until the status line and headers are in (1xx interim responses skipped)."""
        while not self.head_done and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def complete(self) -> None:
        """Until the whole response (body included) is in."""
        while not self.complete_done and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    def _wait(self) -> asyncio.Future[None]:
        self._waiter = self._loop.create_future()
        return self._waiter

    def _wake(self) -> None:
        # The waiter only ever gets a result (errors are read from self.error), so a future
        # nobody awaits any more never logs "exception was never retrieved".
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and not self.complete_done:
            self.error = exc
            self._wake()

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request (keep-alive)."""
        return (self.complete_done and self.error is None and not self.lost
                and not self.head_only and self._keep_alive)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = _perf()
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete_done or self.error is not None:
            # Bytes after the response (or after a failure) are not ours to parse, and a
            # connection that carries them cannot be trusted with another request.
            self.lost = True
            return
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()  # a 101: the head is all there is for us
        except httptools.HttpParserCallbackError as exc:  # one of our callbacks raised
            if not isinstance(exc.__context__, _Done):
                self._fail(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._fail(NetworkFailure(f"invalid HTTP response: {exc}"))
        if not self.head_done and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(NetworkFailure(_HEAD_TOO_LARGE))
        if self.error is not None and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        self._on_eof()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is None:
            self._on_eof()
        elif isinstance(exc, ssl.SSLError):
            self._fail(_with_cause(TLSFailure(f"TLS error on the connection: {exc}"), exc))
        else:
            self._fail(_with_cause(NetworkFailure(_lost_message(self, exc)), exc))

    def _on_eof(self) -> None:
        if self.complete_done or self.error is not None:
            return
        if self.head_done and self._close_delimited:
            self._finish()  # the body ran to the end of the connection, as announced
        else:
            self._fail(NetworkFailure(_lost_message(self, None)))

    # -- httptools callbacks (run inside feed_data) -------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete_done:  # what follows our response is not ours (see on_message_complete)
            raise _Done
        self.headers = []
        self.status = 0
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # (a head that arrives in one read never trips the check in data_received)
        self._field_bytes += len(name) + len(value)
        if self._field_bytes > MAX_HEAD_BYTES:
            raise NetworkFailure(_HEAD_TOO_LARGE)
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True
            return
        self.status = status
        self.headers_at = _perf()
        self.head_done = True
        if self.head_only or status in _NO_FRAMING:
            self._finish()
        else:
            if self._sink_for is not None:
                # chosen here: body bytes may follow in this same feed_data call
                self.sink = self._sink_for(self.headers)
            names = {n for n, _ in self.headers}
            self._close_delimited = ("content-length" not in names
                                     and "transfer-encoding" not in names)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self.complete_done and self.error is None:
            try:
                self.sink(body)
            except Exception as exc:  # the cap or the decompressor: the probe reports it
                self._fail(exc)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish()
        raise _Done  # stop parsing: bytes after the response are not ours

    def _finish(self) -> None:
        if self.error is None and not self.complete_done:
            # read now: llhttp resets its flags once the message is over
            self._keep_alive = self._parser.should_keep_alive()
            self.head_done = self.complete_done = True
            self._wake()


def _with_cause(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _lost_message(ex: Exchange, exc: BaseException | None) -> str:
    how = f"connection lost ({exc})" if exc is not None else "server closed the connection"
    if ex.head_done:
        return f"{how} before the body was complete"
    if ex._head_bytes:
        return f"{how} in the middle of the response head"
    return f"{how} before sending a response"


__all__ = ["MAX_HEAD_BYTES", "Exchange", "SinkFactory"]
