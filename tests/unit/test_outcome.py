"""The classifier: every class of the probe's exception tree and every builtin OS error the
probe can meet lands in a known outcome, decided by type and cause chain, never by text."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl

import pytest

from exporter import outcome as outcome_module
from exporter.outcome import (
    ConnectFailure,
    NetworkFailure,
    Outcome,
    ProbeError,
    ProbeValidationError,
    TLSFailure,
    classify,
    describe,
)

# Every ProbeError subclass the outcome module defines, with the leaf it stands for.
EXPECTED_TREE: dict[str, Outcome] = {
    "ProbeError": Outcome.CRASH,  # the abstract base: nothing concrete to say
    "DNSFailure": Outcome.DNS_ERROR,
    "ConnectFailure": Outcome.CONNECT_ERROR,
    "TLSFailure": Outcome.TLS_ERROR,
    "NetworkFailure": Outcome.NETWORK_ERROR,
    "HTTPFailure": Outcome.HTTP_ERROR,
    "ProbeValidationError": Outcome.VALIDATION_ERROR,
}


def tree_classes() -> dict[str, type[ProbeError]]:
    return {name: obj for name, obj in vars(outcome_module).items()
            if inspect.isclass(obj) and issubclass(obj, ProbeError)}


def test_every_class_of_the_tree_has_its_leaf() -> None:
    classes = tree_classes()
    assert set(classes) == set(EXPECTED_TREE), "a new ProbeError class needs a decision"
    for name, cls in classes.items():
        assert classify(cls("x")) is EXPECTED_TREE[name], name
    # every leaf but success and crash has exactly one class: the tree is the outcome set
    leaves = {o for o in EXPECTED_TREE.values()} | {Outcome.SUCCESS, Outcome.TIMEOUT}
    assert leaves == set(Outcome)


def all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= all_subclasses(sub)
    return out


def test_every_builtin_os_error_has_a_known_outcome() -> None:
    """Whatever OSError surfaces outside the phases the probe wraps (e.g. a write on a
    connection that just broke) is a network error, but for the three that say more."""
    classes = {c for c in all_subclasses(OSError) | {OSError}
               if c.__module__ in ("builtins", "socket", "ssl", "asyncio.exceptions")}
    assert ssl.SSLCertVerificationError in classes  # the walk reaches the ssl module
    for cls in classes:
        try:
            exc = cls(1, "message")
        except TypeError:
            exc = cls()
        if issubclass(cls, TimeoutError):
            want = Outcome.TIMEOUT
        elif issubclass(cls, socket.gaierror):
            want = Outcome.DNS_ERROR
        elif issubclass(cls, ssl.SSLError | ssl.CertificateError):
            want = Outcome.TLS_ERROR
        else:
            want = Outcome.NETWORK_ERROR
        assert classify(exc) is want, cls


@pytest.mark.parametrize(("exc", "outcome"), [
    (TimeoutError(), Outcome.TIMEOUT),
    (asyncio.exceptions.TimeoutError(), Outcome.TIMEOUT),  # the asyncio alias
    (ProbeValidationError("body"), Outcome.VALIDATION_ERROR),
    (ConnectionResetError(104, "reset"), Outcome.NETWORK_ERROR),
    (ConnectionRefusedError(111, "refused"), Outcome.NETWORK_ERROR),  # unwrapped: after connect
    (EOFError(), Outcome.NETWORK_ERROR),
    (socket.gaierror(-2, "Name or service not known"), Outcome.DNS_ERROR),
    (ssl.SSLError("bad record mac"), Outcome.TLS_ERROR),
    (ssl.SSLCertVerificationError("self-signed"), Outcome.TLS_ERROR),
    (ValueError("bug"), Outcome.CRASH),
    (KeyError("bug"), Outcome.CRASH),
    (ZeroDivisionError(), Outcome.CRASH),
])
def test_builtin_exceptions(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc) is outcome


def test_the_phase_that_wrapped_an_error_decides_not_its_cause() -> None:
    # a reset during the TLS handshake is a TLS failure; the same reset once connected is not
    reset = ConnectionResetError(104, "reset")
    tls = TLSFailure("connection broke during the TLS handshake")
    tls.__cause__ = reset
    assert classify(tls) is Outcome.TLS_ERROR
    connect = ConnectFailure("cannot connect")
    connect.__cause__ = ssl.SSLError("x")  # the wrapper's type wins over the chain
    assert classify(connect) is Outcome.CONNECT_ERROR


def test_deadline_wins_over_everything() -> None:
    class ConnectTimeout(ConnectionError, TimeoutError):
        pass

    assert classify(ConnectTimeout()) is Outcome.TIMEOUT


def test_classification_ignores_message_text() -> None:
    assert classify(ValueError("Connection refused timeout certificate")) is Outcome.CRASH
    assert classify(NetworkFailure("timeout certificate refused")) is Outcome.NETWORK_ERROR


def test_describe_names_type_and_causes() -> None:
    exc = NetworkFailure("invalid HTTP response: Invalid status line")
    exc.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    text = describe(exc)
    assert text.startswith("invalid HTTP response")  # the probe's own words, no class name
    assert "<- ConnectionResetError: [Errno 104]" in text  # causes keep theirs
    assert describe(ValueError("bug")) == "ValueError: bug"


def test_ssl_error_anywhere_in_the_chain_is_tls() -> None:
    exc = OSError(5, "read failed")
    exc.__cause__ = ssl.SSLError(1, "bad record mac")
    assert classify(exc) is Outcome.TLS_ERROR
