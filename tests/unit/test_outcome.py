"""The classifier: every exception class aiohttp exports lands in a known outcome."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp import client_exceptions as cex
from aiohttp import http_exceptions as hex_
from multidict import CIMultiDict
from yarl import URL

from exporter.outcome import Outcome, ProbeValidationError, classify, describe

KEY: Any = object()  # connection_key stand-in; only its repr is used in messages
REQ_INFO = aiohttp.RequestInfo(URL("http://x/"), "GET", CIMultiDict(), URL("http://x/"))

# Every exception class aiohttp exports (client and http parser), with its expected outcome.
EXPECTED: dict[str, Outcome] = {
    "ClientError": Outcome.CRASH,  # the abstract base: nothing concrete to say
    "ClientConnectionError": Outcome.NETWORK_ERROR,
    "ClientConnectionResetError": Outcome.NETWORK_ERROR,
    "ClientOSError": Outcome.NETWORK_ERROR,
    "ClientConnectorError": Outcome.CONNECT_ERROR,
    "ClientConnectorDNSError": Outcome.DNS_ERROR,
    "ClientProxyConnectionError": Outcome.CONNECT_ERROR,
    "UnixClientConnectorError": Outcome.CONNECT_ERROR,
    "ClientSSLError": Outcome.TLS_ERROR,
    "ClientConnectorSSLError": Outcome.TLS_ERROR,
    "ClientConnectorCertificateError": Outcome.TLS_ERROR,
    "ServerConnectionError": Outcome.NETWORK_ERROR,
    "ServerDisconnectedError": Outcome.NETWORK_ERROR,
    "ServerFingerprintMismatch": Outcome.TLS_ERROR,
    "ServerTimeoutError": Outcome.TIMEOUT,
    "ConnectionTimeoutError": Outcome.TIMEOUT,
    "SocketTimeoutError": Outcome.TIMEOUT,
    "ClientPayloadError": Outcome.NETWORK_ERROR,
    "ClientResponseError": Outcome.HTTP_ERROR,
    "ClientHttpProxyError": Outcome.HTTP_ERROR,
    "ContentTypeError": Outcome.HTTP_ERROR,
    "TooManyRedirects": Outcome.HTTP_ERROR,
    "WSServerHandshakeError": Outcome.HTTP_ERROR,
    "RedirectClientError": Outcome.HTTP_ERROR,
    "InvalidUrlRedirectClientError": Outcome.HTTP_ERROR,
    "NonHttpUrlRedirectClientError": Outcome.HTTP_ERROR,
    "InvalidURL": Outcome.CRASH,  # the configured URL is validated at load: reaching here is a bug
    "InvalidUrlClientError": Outcome.CRASH,
    "NonHttpUrlClientError": Outcome.CRASH,
    "UploadAbortedError": Outcome.CRASH,
    "WSMessageTypeError": Outcome.CRASH,
    "WebSocketError": Outcome.CRASH,
    "ClientWebSocketError": Outcome.CRASH,
    # the HTTP parser: the peer spoke broken HTTP
    "HttpProcessingError": Outcome.NETWORK_ERROR,
    "BadHttpMessage": Outcome.NETWORK_ERROR,
    "BadHttpMethod": Outcome.NETWORK_ERROR,
    "BadStatusLine": Outcome.NETWORK_ERROR,
    "ContentEncodingError": Outcome.NETWORK_ERROR,
    "ContentLengthError": Outcome.NETWORK_ERROR,
    "DecompressSizeError": Outcome.NETWORK_ERROR,
    "HttpBadRequest": Outcome.NETWORK_ERROR,
    "InvalidHeader": Outcome.NETWORK_ERROR,
    "InvalidURLError": Outcome.NETWORK_ERROR,
    "LineTooLong": Outcome.NETWORK_ERROR,
    "PayloadEncodingError": Outcome.NETWORK_ERROR,
    "TransferEncodingError": Outcome.NETWORK_ERROR,
}


def exported_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in (aiohttp, cex, hex_):
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception)
                    and not issubclass(obj, Warning)
                    and obj.__module__.startswith("aiohttp")
                    and name != "EofStream"):  # internal control flow of the WS reader
                found[name] = obj
    return found


def instantiate(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, aiohttp.ClientConnectorCertificateError):
        return cls(KEY, ssl.SSLCertVerificationError("self-signed certificate"))
    if issubclass(cls, aiohttp.ClientConnectorDNSError):
        return cls(KEY, socket.gaierror(-2, "Name or service not known"))
    if issubclass(cls, cex.UnixClientConnectorError):
        return cls("/run/x.sock", KEY, OSError(111, "Connection refused"))
    if issubclass(cls, aiohttp.ClientConnectorError):
        return cls(KEY, OSError(111, "Connection refused"))
    if issubclass(cls, aiohttp.ClientResponseError):
        return cls(REQ_INFO, (), status=400)
    if issubclass(cls, aiohttp.ServerFingerprintMismatch):
        return cls(b"a", b"b", "x", 443)
    if issubclass(cls, cex.InvalidURL):
        return cls("bad url")
    if issubclass(cls, cex.NonHttpUrlClientError):
        return cls("ftp://x")
    for args in ((), ("message",), (1002, "message")):
        try:
            return cls(*args)
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls}")


def test_every_exported_aiohttp_exception_has_a_known_outcome() -> None:
    classes = exported_exception_classes()
    unknown = sorted(set(classes) - set(EXPECTED))
    assert not unknown, f"new aiohttp exception classes need a decision: {unknown}"
    for name, cls in sorted(classes.items()):
        assert classify(instantiate(cls)) is EXPECTED[name], name


@pytest.mark.parametrize(("exc", "outcome"), [
    (TimeoutError(), Outcome.TIMEOUT),
    (asyncio.exceptions.TimeoutError(), Outcome.TIMEOUT),  # the asyncio alias
    (ProbeValidationError("body"), Outcome.VALIDATION_ERROR),
    (ConnectionResetError(104, "reset"), Outcome.NETWORK_ERROR),
    (ssl.SSLError("bad record mac"), Outcome.TLS_ERROR),
    (ValueError("bug"), Outcome.CRASH),
    (KeyError("bug"), Outcome.CRASH),
    (ZeroDivisionError(), Outcome.CRASH),
])
def test_builtin_exceptions(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc) is outcome


def test_connect_timeout_is_timeout_not_connect_error() -> None:
    # both a ClientConnectorError-ish and a TimeoutError: the deadline wins
    assert classify(aiohttp.ConnectionTimeoutError("connect")) is Outcome.TIMEOUT
    wrapped = aiohttp.ClientConnectorError(KEY, OSError(110, "timed out"))
    wrapped.__cause__ = TimeoutError()
    assert classify(wrapped) is Outcome.TIMEOUT


def test_malformed_response_is_network_error_by_cause_chain() -> None:
    exc = aiohttp.ClientResponseError(REQ_INFO, (), status=400, message="Bad status line")
    exc.__cause__ = hex_.BadStatusLine("SSH-2.0")
    assert classify(exc) is Outcome.NETWORK_ERROR
    # the same class without that cause is an HTTP problem
    assert classify(aiohttp.ClientResponseError(REQ_INFO, (), status=400)) is Outcome.HTTP_ERROR


def test_dns_failure_wrapped_as_plain_connector_error() -> None:
    exc = aiohttp.ClientConnectorError(KEY, OSError(1, "x"))
    exc.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert classify(exc) is Outcome.DNS_ERROR


def test_classification_ignores_message_text() -> None:
    assert classify(ValueError("Connection refused timeout certificate")) is Outcome.CRASH


def test_describe_names_type_and_causes() -> None:
    exc = aiohttp.ClientResponseError(REQ_INFO, (), status=400, message="Bad status line")
    exc.__cause__ = hex_.BadStatusLine("SSH-2.0")
    text = describe(exc)
    assert text.startswith("ClientResponseError: 400")
    assert "BadStatusLine" in text


def test_ssl_error_anywhere_in_the_chain_is_tls() -> None:
    exc = aiohttp.ClientOSError(5, "read failed")
    exc.__cause__ = ssl.SSLError(1, "bad record mac")
    assert classify(exc) is Outcome.TLS_ERROR
