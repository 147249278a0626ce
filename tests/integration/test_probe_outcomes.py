"""Every outcome class against a real local server, asserted as exact counter values."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import yaml

from exporter.config import Target, load_config_text
from exporter.metrics import Metrics
from exporter.outcome import OUTCOMES, Outcome, ProbeResult
from exporter.probes.http import HTTPProber
from tests.faults import FaultServers
from tests.helpers import value


def make_target(url: str, timeout: str = "2s", **http: Any) -> Target:
    doc: dict[str, Any] = {"targets": [{"name": "t", "url": url, "timeout": timeout,
                                        "interval": "10s"}]}
    if http:
        doc["targets"][0]["http"] = http
    return load_config_text(yaml.safe_dump(doc)).targets[0]


async def run(prober: HTTPProber, target: Target) -> tuple[ProbeResult, Metrics]:
    """One probe through a fresh metrics store, the way the scheduler reports it."""
    metrics = Metrics(process_collectors=False)
    metrics.set_targets([target])
    await prober.prepare((target,))
    metrics.probe_started(target.name)
    result = await prober.probe(target)
    metrics.probe_finished(target.name, result)
    return result, metrics


def assert_counted_once(metrics: Metrics, outcome: Outcome) -> None:
    for o in OUTCOMES:
        want = 1.0 if o is outcome else 0.0
        assert value(metrics, "vantage_probes_total", target="t", outcome=o.value) == want, o
    assert value(metrics, "vantage_probes_started_total", target="t") == 1.0
    assert value(metrics, "vantage_probe_last_outcome", target="t", outcome=outcome.value) == 1
    assert value(metrics, "vantage_probe_success", target="t") == (outcome is Outcome.SUCCESS)
    assert value(metrics, "vantage_probe_duration_seconds_count", target="t",
                 outcome=outcome.value) == 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# (path or url builder, http overrides, timeout, expected outcome, text expected in detail)
CASES: list[tuple[str, str, dict[str, Any], str, Outcome, str]] = [
    ("ok", "/ok", {}, "2s", Outcome.SUCCESS, ""),
    ("non-2xx", "/status/503", {}, "2s", Outcome.HTTP_ERROR, "503"),
    ("404 accepted", "/status/404", {"valid_status_codes": [404]}, "2s", Outcome.SUCCESS, ""),
    ("slow", "/slow?s=5", {}, "300ms", Outcome.TIMEOUT, "during processing"),
    ("drip-fed body", "/drip", {}, "700ms", Outcome.TIMEOUT, "during transfer"),
    ("reset mid-response", "/reset", {}, "2s", Outcome.NETWORK_ERROR, ""),
    ("oversized body", "/big", {"max_body_bytes": "64KiB"}, "2s", Outcome.VALIDATION_ERROR,
     "max_body_bytes"),
    ("gzip bomb", "/bomb", {"max_body_bytes": "1MiB"}, "5s", Outcome.VALIDATION_ERROR,
     "max_body_bytes"),
    ("body regexp fails", "/body?text=status:+degraded", {
        "fail_if_body_not_matches_regexp": ["status: ok"]}, "2s", Outcome.VALIDATION_ERROR,
     "does not match"),
    ("body regexp forbids", "/body?text=FATAL+error", {
        "fail_if_body_matches_regexp": ["FATAL"]}, "2s", Outcome.VALIDATION_ERROR, "FATAL"),
    ("body regexp passes", "/body?text=status:+ok", {
        "fail_if_body_not_matches_regexp": ["status: ok"]}, "2s", Outcome.SUCCESS, ""),
    ("header regexp", "/header?v=degraded", {
        "fail_if_header_matches": [{"header": "X-State", "regexp": "degr"}]}, "2s",
     Outcome.VALIDATION_ERROR, "x-state"),
    ("redirect loop", "/redirect-loop", {}, "2s", Outcome.HTTP_ERROR, "redirects"),
    ("redirect followed", "/redirect?to=/ok", {}, "2s", Outcome.SUCCESS, ""),
    ("redirect not followed", "/redirect?to=/ok", {"follow_redirects": False}, "2s",
     Outcome.HTTP_ERROR, "302"),
    ("TLS required", "/ok", {"fail_if_not_ssl": True}, "2s", Outcome.VALIDATION_ERROR,
     "not HTTPS"),
    ("huge headers", "/huge-headers", {}, "2s", Outcome.NETWORK_ERROR, ""),
]


@pytest.mark.parametrize(("case", "path", "http", "timeout", "outcome", "detail"), CASES,
                         ids=[c[0] for c in CASES])
async def test_outcome_against_fault_server(
    faults: FaultServers, prober: HTTPProber, case: str, path: str, http: dict[str, Any],
    timeout: str, outcome: Outcome, detail: str,
) -> None:
    result, metrics = await run(prober, make_target(faults.url(path), timeout, **http))
    assert result.outcome is outcome, result
    assert detail in result.detail
    assert_counted_once(metrics, outcome)


async def test_garbage_speaker_is_network_error(faults: FaultServers, prober: HTTPProber) -> None:
    result, metrics = await run(prober, make_target(faults.garbage_url))
    assert result.outcome is Outcome.NETWORK_ERROR, result
    assert_counted_once(metrics, Outcome.NETWORK_ERROR)


async def test_refused_port_is_connect_error(prober: HTTPProber) -> None:
    result, metrics = await run(prober, make_target(f"http://127.0.0.1:{free_port()}/"))
    assert result.outcome is Outcome.CONNECT_ERROR, result
    assert "refused" in result.detail.lower() or "connect call failed" in result.detail.lower()
    assert_counted_once(metrics, Outcome.CONNECT_ERROR)


async def test_invalid_host_is_dns_error(prober: HTTPProber) -> None:
    result, metrics = await run(prober, make_target("http://vantage-test.invalid/", "4s"))
    assert result.outcome is Outcome.DNS_ERROR, result
    assert_counted_once(metrics, Outcome.DNS_ERROR)


async def test_self_signed_is_tls_error(faults: FaultServers, prober: HTTPProber) -> None:
    # the server's CA is not in the default trust store: verification fails
    result, metrics = await run(prober, make_target(faults.tls_url("/ok")))
    assert result.outcome is Outcome.TLS_ERROR, result
    assert "certificate" in result.detail.lower()
    assert_counted_once(metrics, Outcome.TLS_ERROR)


async def test_ca_file_makes_tls_succeed_with_phases_and_expiry(
        faults: FaultServers, prober: HTTPProber) -> None:
    target = make_target(faults.tls_url("/ok"), tls={"ca_file": faults.ca_file})
    result, metrics = await run(prober, target)
    assert result.outcome is Outcome.SUCCESS, result
    assert result.status_code == 200
    assert result.phases["tls"] > 0
    assert result.phases["connect"] > 0
    assert result.phases["processing"] > 0
    assert abs(sum(result.phases.values()) - result.duration) < 0.05
    assert result.tls_cert_expiry > 1e9  # a real unix time from the peer certificate
    assert value(metrics, "vantage_probe_tls_cert_expiry_timestamp_seconds",
                 target="t") == pytest.approx(result.tls_cert_expiry)
    assert value(metrics, "vantage_probe_http_status_code", target="t") == 200
    assert_counted_once(metrics, Outcome.SUCCESS)


async def test_wrong_host_name_is_tls_error(faults: FaultServers, prober: HTTPProber) -> None:
    target = make_target(faults.tls_url("/ok"), tls={"ca_file": faults.ca_file,
                                                      "server_name": "wrong.example"})
    result, _ = await run(prober, target)
    assert result.outcome is Outcome.TLS_ERROR, result


async def test_insecure_skip_verify_succeeds(faults: FaultServers, prober: HTTPProber) -> None:
    target = make_target(faults.tls_url("/ok"), tls={"insecure_skip_verify": True})
    result, _ = await run(prober, target)
    assert result.outcome is Outcome.SUCCESS, result
    assert result.tls_cert_expiry > 1e9


async def test_plain_http_to_tls_port_is_network_error(faults: FaultServers,
                                                       prober: HTTPProber) -> None:
    result, _ = await run(prober, make_target(f"http://127.0.0.1:{faults.tls_port}/ok"))
    assert result.outcome is Outcome.NETWORK_ERROR, result


async def test_tls_to_plain_port_is_tls_error(faults: FaultServers, prober: HTTPProber) -> None:
    result, _ = await run(prober, make_target(f"https://127.0.0.1:{faults.port}/ok"))
    assert result.outcome is Outcome.TLS_ERROR, result


async def test_request_options_reach_the_server(faults: FaultServers, prober: HTTPProber,
                                                tmp_path: Any, monkeypatch: Any) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    monkeypatch.setenv("VANTAGE_TEST_HEADER", "from-env")
    doc = {"targets": [{"name": "t", "url": faults.url("/echo"), "http": {
        "method": "POST", "body": "payload", "headers": {"X-From": "${VANTAGE_TEST_HEADER}"},
        "bearer_token_file": str(token),
        "fail_if_body_not_matches_regexp": ['"method": "POST"', "payload", "from-env",
                                            "Bearer s3cret", "vantage-exporter/"]}}]}
    target = load_config_text(yaml.safe_dump(doc)).targets[0]
    result, _ = await run(prober, target)
    assert result.outcome is Outcome.SUCCESS, result.detail


async def test_basic_auth_reaches_the_server(faults: FaultServers, prober: HTTPProber,
                                             tmp_path: Any) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    doc = {"targets": [{"name": "t", "url": faults.url("/echo"), "http": {
        "basic_auth": {"username": "alice", "password_file": str(tmp_path / "pw")},
        # base64("alice:hunter2")
        "fail_if_body_not_matches_regexp": ["Basic YWxpY2U6aHVudGVyMg=="]}}]}
    target = load_config_text(yaml.safe_dump(doc)).targets[0]
    result, _ = await run(prober, target)
    assert result.outcome is Outcome.SUCCESS, result.detail


async def test_keepalive_target_reuses_connection(faults: FaultServers, prober: HTTPProber
                                                  ) -> None:
    target = make_target(faults.url("/ok"), keepalive=True)
    first, _ = await run(prober, target)
    second, _ = await run(prober, target)
    assert first.outcome is second.outcome is Outcome.SUCCESS
    assert first.phases["connect"] > 0
    assert second.phases["connect"] == 0  # reused: no connection was created


async def test_compressed_bodies_are_decompressed_for_checks(faults: FaultServers,
                                                             prober: HTTPProber) -> None:
    # aiohttp's server compresses on request; the body checks see the decompressed text
    target = make_target(faults.url("/gzip?text=all+systems+nominal"),
                         fail_if_body_not_matches_regexp=["systems nominal"])
    result, _ = await run(prober, target)
    assert result.outcome is Outcome.SUCCESS, result.detail


async def test_corrupt_gzip_is_network_error(faults: FaultServers, prober: HTTPProber) -> None:
    result, _ = await run(prober, make_target(faults.url("/corrupt-gzip")))
    assert result.outcome is Outcome.NETWORK_ERROR, result
    assert "decompress" in result.detail


async def test_file_descriptors_return_to_baseline(faults: FaultServers,
                                                   prober: HTTPProber) -> None:
    import os

    targets = [make_target(faults.url(path), "700ms", **http)
               for _, path, http, _, _, _ in CASES if "slow" not in path]
    targets += [make_target(faults.garbage_url), make_target(faults.tls_url("/ok"))]
    for t in targets:  # warm up: first-use allocations (contexts, resolver) happen here
        await run(prober, t)
    await asyncio.sleep(0.2)
    baseline = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for t in targets:
            await run(prober, t)
    # The fault servers run in this process too: their side of a connection (e.g. a drip
    # handler noticing the hang-up) closes on a later loop turn. A leak never comes back.
    for _ in range(40):
        if len(os.listdir("/proc/self/fd")) <= baseline:
            break
        await asyncio.sleep(0.1)
    assert len(os.listdir("/proc/self/fd")) <= baseline


async def test_client_certificate_mtls(tmp_path: Any, prober: HTTPProber) -> None:
    """cert_file/key_file present a client certificate; without one, a server that requires
    it hangs up right after the (TLS 1.3) handshake: network_error, as the README says."""
    import ssl

    import trustme
    from aiohttp import web

    ca = trustme.CA()
    server_cert, client_cert = ca.issue_cert("localhost"), ca.issue_cert("client.example")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED

    async def hello(_r: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    url = f"https://localhost:{runner.addresses[0][1]}/"
    try:
        with_cert = make_target(url, tls={"ca_file": str(tmp_path / "ca.pem"),
                                          "cert_file": str(tmp_path / "client.crt"),
                                          "key_file": str(tmp_path / "client.key")})
        result, _ = await run(prober, with_cert)
        assert result.outcome is Outcome.SUCCESS, result
        without = make_target(url, tls={"ca_file": str(tmp_path / "ca.pem")})
        result, _ = await run(prober, without)
        assert result.outcome in (Outcome.NETWORK_ERROR, Outcome.TLS_ERROR), result
    finally:
        await runner.cleanup()
