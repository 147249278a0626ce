"""How a probe ended: the outcome tree, one function that maps exceptions onto it.

Every probe that starts ends in exactly one leaf::

    probe
    +-- success            response received, status accepted, every check passed
    +-- timeout            the target's deadline passed, in any phase (`detail` names it)
    +-- could not talk HTTP
    |   +-- dns_error      the host name did not resolve
    |   +-- connect_error  no TCP connection (refused, unreachable, reset while connecting)
    |   +-- tls_error      handshake or certificate verification failed
    |   +-- network_error  the connection broke after it was made, or the peer spoke no HTTP
    +-- talked HTTP, did not like the answer
    |   +-- http_error        status not in valid_status_codes, too many/bad redirects
    |   +-- validation_error  body/header regexp, body over max_body_bytes, TLS required
    +-- crash              the probe code itself raised (a bug): isolated, counted, logged

:func:`classify` decides by exception *type* and *cause chain*, most specific first, never by
message text. aiohttp's exceptions inherit builtins too (a connect timeout is both a
``ClientConnectorError`` and a ``TimeoutError``), so the order of the checks below is the design.
"""

from __future__ import annotations

import enum
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import client_exceptions as cex
from aiohttp import http_exceptions as hex_


class Outcome(enum.Enum):
    SUCCESS = "success"
    TIMEOUT = "timeout"
    DNS_ERROR = "dns_error"
    CONNECT_ERROR = "connect_error"
    TLS_ERROR = "tls_error"
    NETWORK_ERROR = "network_error"
    HTTP_ERROR = "http_error"
    VALIDATION_ERROR = "validation_error"
    CRASH = "crash"

    def __str__(self) -> str:
        return self.value


#: In exposition order; index positions are used by the metrics store.
OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)

#: Probe phases, in the order they happen.
PHASES: tuple[str, ...] = ("resolve", "connect", "tls", "processing", "transfer")

#: One sentence per outcome, for the status page and the `probe` command.
EXPLANATIONS: dict[Outcome, str] = {
    Outcome.SUCCESS: "response received, status accepted, all checks passed",
    Outcome.TIMEOUT: "the probe's deadline passed before it finished",
    Outcome.DNS_ERROR: "the host name could not be resolved",
    Outcome.CONNECT_ERROR: "no TCP connection could be established",
    Outcome.TLS_ERROR: "the TLS handshake or certificate verification failed",
    Outcome.NETWORK_ERROR:
        "the connection broke after it was established, or the peer spoke no valid HTTP",
    Outcome.HTTP_ERROR: "the HTTP status is not an accepted one (or redirects went wrong)",
    Outcome.VALIDATION_ERROR: "the response arrived but a check on it failed",
    Outcome.CRASH: "the probe code itself raised an unexpected exception (a bug in the exporter)",
}


class ProbeValidationError(Exception):
    """A check on a received response failed (raised and caught inside the probe only)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe tells: its outcome, how long it took and why it failed, as data."""

    outcome: Outcome
    duration: float
    detail: str = ""  # empty on success; the error in words otherwise
    status_code: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    tls_cert_expiry: float = 0.0  # unix time of the earliest notAfter seen, 0 if none
    final_url: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes/contexts, outermost first, each once."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def classify(exc: BaseException) -> Outcome:
    """Map an exception raised while probing onto its outcome class.

    >>> classify(TimeoutError())
    <Outcome.TIMEOUT: 'timeout'>

    ``CancelledError`` is not an outcome: callers must re-raise it before calling this.
    """
    # A deadline is always a timeout, whatever phase it hit (covers asyncio.timeout's bare
    # TimeoutError and aiohttp's ServerTimeoutError/ConnectionTimeoutError/SocketTimeoutError).
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT
    if isinstance(exc, ProbeValidationError):
        return Outcome.VALIDATION_ERROR
    # Redirect problems are about the answer we got, not about the transport.
    if isinstance(exc, aiohttp.TooManyRedirects | cex.RedirectClientError):
        return Outcome.HTTP_ERROR
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Outcome.DNS_ERROR
    # TLS before connect: ClientConnectorSSLError/CertificateError are ClientConnectorErrors too.
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError | aiohttp.ServerFingerprintMismatch):
        return Outcome.TLS_ERROR
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _classify_connector_error(exc)
    # A malformed answer arrives as ClientResponseError(400) caused by BadStatusLine & co.
    if isinstance(exc, aiohttp.ClientResponseError):
        if any(isinstance(e, hex_.HttpProcessingError) for e in _chain(exc)):
            return Outcome.NETWORK_ERROR
        return Outcome.HTTP_ERROR
    # An SSL error anywhere in the chain (e.g. a bad record after the handshake) is TLS.
    if any(isinstance(e, ssl.SSLError) for e in _chain(exc)):
        return Outcome.TLS_ERROR
    if isinstance(
        exc,
        aiohttp.ClientConnectionError
        | aiohttp.ClientPayloadError
        | hex_.HttpProcessingError
        | ConnectionError
        | EOFError,
    ):
        return Outcome.NETWORK_ERROR
    if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
        return Outcome.NETWORK_ERROR
    return Outcome.CRASH


def _classify_connector_error(exc: aiohttp.ClientConnectorError) -> Outcome:
    for e in _chain(exc):
        if isinstance(e, TimeoutError):
            return Outcome.TIMEOUT
        if isinstance(e, ssl.SSLError):
            return Outcome.TLS_ERROR
        if isinstance(e, socket.gaierror):
            return Outcome.DNS_ERROR
    return Outcome.CONNECT_ERROR


def describe(exc: BaseException) -> str:
    """The error in words, for logs, the status page and `probe`: type and message, causes."""
    parts: list[str] = []
    for e in _chain(exc):
        text = str(e).strip() or e.__class__.__name__
        label = f"{e.__class__.__name__}: {text}" if text != e.__class__.__name__ else text
        if not parts or text not in parts[-1]:
            parts.append(label)
        if len(parts) == 3:
            break
    return " <- ".join(parts)[:500]


__all__ = [
    "EXPLANATIONS",
    "OUTCOMES",
    "PHASES",
    "Outcome",
    "ProbeResult",
    "ProbeValidationError",
    "classify",
    "describe",
]
