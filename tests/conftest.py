from __future__ import annotations

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
