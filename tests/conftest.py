from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from exporter.probes.http import HTTPProber
from tests.faults import FaultServers


@pytest.fixture
async def faults() -> AsyncIterator[FaultServers]:
    async with FaultServers() as f:
        yield f


@pytest.fixture
async def prober() -> AsyncIterator[HTTPProber]:
    async with HTTPProber() as p:
        yield p


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", default=os.environ.get("VANTAGE_SOAK_SECONDS", "75"),
                     help="how long tests/soak runs (CI: 75; a long run: 1800)")
