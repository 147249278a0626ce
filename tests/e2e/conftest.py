"""Fixtures of the end-to-end test; the parts of the stack are in stack.py."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import sys
import time
from collections.abc import Iterator

import pytest
import trustme

from .stack import (
    DATA_SECONDS,
    EXPECTED_OUTCOMES,
    JOB,
    REPO_ROOT,
    LocalTargets,
    Process,
    Stack,
    alert_rules,
    exporter_config,
    free_port,
    prometheus_config,
    wait_until_ready,
)

# What asyncio and aiohttp log when a shutdown leaves something behind.
UNCLEAN_SHUTDOWN = re.compile(
    r"Unclosed (client session|connector)|Task was destroyed but it is pending"
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("no `prometheus` binary: install the Debian package `prometheus` to run e2e")
    directory = tmp_path_factory.mktemp("e2e")

    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)

    env = dict(os.environ)
    # The working tree's package, whether or not it is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"

    processes: list[Process] = []
    with LocalTargets(tls) as targets:
        try:
            config = exporter_config(directory, targets, ca_file)
            instances = [f"127.0.0.1:{free_port()}" for _ in range(2)]
            for n, instance in enumerate(instances):
                exporter = Process(
                    f"exporter-{n}",
                    [
                        sys.executable,
                        "-m",
                        "exporter",
                        "--config",
                        str(config),
                        "--listen",
                        instance,
                        "--web.enable-lifecycle",
                    ],
                    directory / f"exporter-{n}.log",
                    directory,
                    env,
                )
                processes.append(exporter)
            for exporter, instance in zip(processes, instances, strict=True):
                wait_until_ready(exporter, f"http://{instance}/-/ready")

            rules = alert_rules(directory)
            prometheus_address = f"127.0.0.1:{free_port()}"
            server = Process(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={prometheus_config(directory, instances, rules)}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address={prometheus_address}",
                    "--log.level=warn",
                ],
                directory / "prometheus.log",
                directory,
                env,
            )
            processes.append(server)
            wait_until_ready(server, f"http://{prometheus_address}/-/ready")

            yield Stack(
                prometheus_url=f"http://{prometheus_address}",
                exporter_urls=tuple(f"http://{i}" for i in instances),
                instances=tuple(instances),
                job=JOB,
                targets=tuple(sorted(EXPECTED_OUTCOMES)),
                rules_file=rules,
                deadline=time.monotonic() + DATA_SECONDS,
                processes=tuple(processes),
            )
        finally:
            exit_codes = {process.name: process.stop() for process in reversed(processes)}

    # DESIGN.md: SIGTERM is a clean shutdown, exit 0, nothing left unclosed or pending.
    unclean = {name: code for name, code in exit_codes.items() if code != 0}
    leaks = [p.name for p in processes if UNCLEAN_SHUTDOWN.search(p.log_path.read_text())]
    if unclean or leaks:
        logs = "\n".join(p.tail() for p in processes)
        pytest.fail(f"unclean shutdown: exit codes {unclean}, leaks logged by {leaks}\n{logs}")
