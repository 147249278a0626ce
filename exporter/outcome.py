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
message text. The probe (``exporter.probes``) speaks HTTP/1.1 itself and raises one
:class:`ProbeError` subclass per leaf at the point where it knows the phase (a refused connect is
:class:`ConnectFailure`, an error during the handshake :class:`TLSFailure`, anything once
connected :class:`NetworkFailure`), so classification is mostly the type of what it raised.
Builtins that still reach :func:`classify` are mapped by type: ``TimeoutError`` first (a
deadline is always a timeout), then ``socket.gaierror``, SSL errors anywhere in the cause
chain, other ``OSError``. Exception tree::

    Exception
    +-- ProbeError             (abstract: crash if raised bare)
        +-- DNSFailure         dns_error
        +-- ConnectFailure     connect_error
        +-- TLSFailure         tls_error
        +-- NetworkFailure     network_error
        +-- HTTPFailure        http_error
        +-- ProbeValidationError  validation_error
"""

from __future__ import annotations

import enum
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar


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


class ProbeError(Exception):
    """A probe ended in a known, named way. Raised inside the probe only; ``outcome`` is the
    leaf. The probe code translates every transport error into one of these where it happens
    (it knows the phase), so :func:`classify` needs no guessing for them."""

    outcome: ClassVar[Outcome] = Outcome.CRASH  # the abstract base says nothing


class DNSFailure(ProbeError):
    outcome = Outcome.DNS_ERROR


class ConnectFailure(ProbeError):
    outcome = Outcome.CONNECT_ERROR


class TLSFailure(ProbeError):
    outcome = Outcome.TLS_ERROR


class NetworkFailure(ProbeError):
    """The connection broke after it was made, or the peer spoke no valid HTTP."""

    outcome = Outcome.NETWORK_ERROR


class HTTPFailure(ProbeError):
    """A valid answer we do not accept: status, too many redirects, a redirect we cannot
    follow."""

    outcome = Outcome.HTTP_ERROR


class ProbeValidationError(ProbeError):
    """A check on a received response failed."""

    outcome = Outcome.VALIDATION_ERROR


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
    >>> classify(ConnectFailure("connection refused"))
    <Outcome.CONNECT_ERROR: 'connect_error'>

    ``CancelledError`` is not an outcome: callers must re-raise it before calling this.
    """
    # A deadline is always a timeout, whatever phase it hit.
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT
    if isinstance(exc, ProbeError):
        return exc.outcome
    # What follows did not pass through the probe's own translation (a transport error that
    # surfaced outside a phase it wraps): decide by type, most specific first.
    if isinstance(exc, socket.gaierror):
        return Outcome.DNS_ERROR
    # An SSL error anywhere in the chain (e.g. a bad record after the handshake) is TLS.
    if any(isinstance(e, ssl.SSLError) for e in _chain(exc)):  # CertificateError included
        return Outcome.TLS_ERROR
    # Any other OS-level error once connected: the connection broke.
    if isinstance(exc, OSError | EOFError):
        return Outcome.NETWORK_ERROR
    return Outcome.CRASH


def describe(exc: BaseException) -> str:
    """The error in words, for logs, the status page and `probe`: message, then causes.

    The probe's own errors are written as sentences and go without their class name (the
    outcome already says what kind); causes from the OS or libraries keep theirs:

    >>> e = ConnectFailure("cannot connect to 127.0.0.1:9: Connection refused")
    >>> e.__cause__ = ConnectionRefusedError(111, "Connection refused")
    >>> describe(e)
    'cannot connect to 127.0.0.1:9: Connection refused <- ConnectionRefusedError: [Errno 111] Connection refused'
    """  # noqa: E501 -- a doctest line
    parts: list[str] = []
    for e in _chain(exc):
        text = str(e).strip() or e.__class__.__name__
        plain = isinstance(e, ProbeError) or text == e.__class__.__name__
        label = text if plain else f"{e.__class__.__name__}: {text}"
        if not parts or text not in parts[-1]:
            parts.append(label)
        if len(parts) == 3:
            break
    return " <- ".join(parts)[:500]


__all__ = [
    "EXPLANATIONS",
    "OUTCOMES",
    "PHASES",
    "ConnectFailure",
    "DNSFailure",
    "HTTPFailure",
    "NetworkFailure",
    "Outcome",
    "ProbeError",
    "ProbeResult",
    "ProbeValidationError",
    "TLSFailure",
    "classify",
    "describe",
]
