"""Scheduler: grid timing, spread, concurrency, skips, supervision and crash isolation.

Timing tests use short intervals and assert on planned times and counts, never on speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

import pytest

from exporter.config import Target, load_config_text
from exporter.metrics import Metrics
from exporter.outcome import Outcome, ProbeResult
from exporter.scheduler import Scheduler, grid_offset, next_slot
from tests.helpers import value


def targets(n: int, interval: str = "200ms", timeout: str = "150ms", prefix: str = "t"
            ) -> tuple[Target, ...]:
    lines = "\n".join(f"  - {{name: {prefix}{i}, url: 'http://127.0.0.1:{i + 1}/', "
                      f"interval: {interval}, timeout: {timeout}}}" for i in range(n))
    return load_config_text(f"targets:\n{lines}\n").targets


def ok(duration: float = 0.001) -> ProbeResult:
    return ProbeResult(Outcome.SUCCESS, duration)


def scheduled(probe: Callable[[Target], Awaitable[ProbeResult]], ts: tuple[Target, ...]
              ) -> tuple[Scheduler, Metrics]:
    """A scheduler running ``ts`` with ``probe``, reporting to a fresh metrics store."""
    metrics = Metrics(process_collectors=False)
    metrics.set_targets(ts)
    sched = Scheduler(probe, metrics)
    sched.apply(ts)
    return sched, metrics


def test_next_slot_is_on_the_grid() -> None:
    assert next_slot(100.0, 3.0, 15.0) == 108.0
    assert next_slot(108.0, 3.0, 15.0) == 123.0  # strictly after now
    assert next_slot(0.0, 3.0, 15.0) == 3.0


def test_next_slot_moves_on_from_a_slot_despite_rounding() -> None:
    # a slot fed back in must give the next one: float rounding once returned the same slot,
    # and a re-armed run fired again and again in the same instant (counted as skips)
    offset, interval = 0.0529330512, 0.1
    now = 1764643200.0
    for _ in range(10_000):
        nxt = next_slot(now, offset, interval)
        assert now < nxt <= now + interval + 1e-6
        now = nxt


def test_offsets_are_stable_and_spread_evenly() -> None:
    assert grid_offset("checkout-api", 15) == grid_offset("checkout-api", 15)
    offsets = [grid_offset(f"target-{i}", 15.0) for i in range(10_000)]
    assert all(0 <= o < 15 for o in offsets)
    # evenly spread: each of 15 one-second buckets holds close to 1/15 of the targets
    counts = [0] * 15
    for o in offsets:
        counts[int(o)] += 1
    assert max(counts) < 10_000 / 15 * 1.15
    assert min(counts) > 10_000 / 15 * 0.85


async def test_runs_stay_on_the_absolute_grid_without_drift() -> None:
    seen: list[float] = []
    sched: Scheduler

    async def probe(t: Target) -> ProbeResult:
        (_, _, next_wall, _), = sched.slots()
        seen.append(next_wall)
        await asyncio.sleep(0.03)  # probe time must not shift the grid
        return ok()

    metrics = Metrics(process_collectors=False)
    (t,) = targets(1, "100ms", "80ms")
    metrics.set_targets([t])
    sched = Scheduler(probe, metrics)
    sched.apply([t])
    await asyncio.sleep(0.75)
    await sched.stop(1)
    assert len(seen) >= 4
    off = grid_offset(t.name, 0.1)
    for planned in seen:
        k = (planned - off) / 0.1
        assert abs(k - round(k)) < 1e-6, "planned start is off the grid"
    steps = [round((b - a) / 0.1) for a, b in itertools.pairwise(seen)]
    assert steps == [1] * len(steps), "a run was dropped or doubled"


async def test_crash_is_isolated_counted_and_logged_once(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    async def probe(t: Target) -> ProbeResult:
        await asyncio.sleep(0.001)
        if t.name == "t1":
            raise KeyError("bug in probe code")
        return ok()

    ts = targets(3, "100ms", "50ms")
    metrics = Metrics(process_collectors=False)
    metrics.set_targets(ts)
    sched = Scheduler(probe, metrics)
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        sched.apply(ts)
        await asyncio.sleep(0.65)
        await sched.stop(1)
    crashes = value(metrics, "vantage_probes_total", target="t1", outcome="crash") or 0
    assert crashes >= 4
    assert value(metrics, "vantage_probes_total", target="t1", outcome="success") == 0
    for healthy in ("t0", "t2"):
        assert (value(metrics, "vantage_probes_total", target=healthy, outcome="success") or 0) >= 4
        assert value(metrics, "vantage_probes_total", target=healthy, outcome="crash") == 0
    crash_logs = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash_logs) == 1, "repeat tracebacks must be rate-limited"
    assert "KeyError: 'bug in probe code'" in crash_logs[0].getMessage()
    last = sched.slots()[1][1]
    assert last is not None
    assert last.outcome is Outcome.CRASH
    assert "KeyError" in last.detail


async def test_a_run_still_going_skips_the_next_slot_never_overlaps() -> None:
    running: dict[str, int] = {}
    overlap = False

    async def probe(t: Target) -> ProbeResult:
        nonlocal overlap
        running[t.name] = running.get(t.name, 0) + 1
        overlap |= running[t.name] > 1
        await asyncio.sleep(0.25)  # longer than the 100ms interval
        running[t.name] -= 1
        return ok(0.25)

    (t,) = targets(1, "100ms", "90ms")
    metrics = Metrics(process_collectors=False)
    metrics.set_targets([t])
    sched = Scheduler(probe, metrics)
    sched.apply([t])
    await asyncio.sleep(0.8)
    await sched.stop(1)
    assert not overlap
    assert (value(metrics, "vantage_probes_skipped_total", target=t.name) or 0) >= 3


async def test_max_concurrency_bounds_in_flight_and_skips_what_cannot_start() -> None:
    in_flight = peak = 0

    async def probe(t: Target) -> ProbeResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.08)
        in_flight -= 1
        return ok(0.08)

    ts = targets(6, "100ms", "90ms")
    metrics = Metrics(process_collectors=False)
    metrics.set_targets(ts)
    sched = Scheduler(probe, metrics, max_concurrency=2)
    sched.apply(ts)
    await asyncio.sleep(1.0)
    await sched.stop(1)
    assert peak == 2
    skipped = sum(value(metrics, "vantage_probes_skipped_total", target=t.name) or 0 for t in ts)
    assert skipped > 0  # 6 targets x 80 ms per 100 ms cannot fit in 2 slots
    assert (value(metrics, "vantage_scheduler_lag_seconds_count") or 0) > 0


async def test_supervisor_cuts_off_a_probe_that_ignores_its_deadline() -> None:
    async def probe(t: Target) -> ProbeResult:
        await asyncio.sleep(10)
        return ok()

    (t,) = targets(1, "1s", "100ms")
    metrics = Metrics(process_collectors=False)
    metrics.set_targets([t])
    sched = Scheduler(probe, metrics)
    sched.apply([t])
    await asyncio.sleep(1.5)
    await sched.stop(0.1)
    assert (value(metrics, "vantage_probes_total", target=t.name, outcome="timeout") or 0) >= 1


async def test_stop_gives_grace_then_cancels_and_conserves_counts() -> None:
    async def probe(t: Target) -> ProbeResult:
        await asyncio.sleep(5)
        return ok()

    ts = targets(3, "10s", "9s")
    sched, metrics = scheduled(probe, ts)
    await asyncio.sleep(0)
    # force every target to start now
    for slot in sched._slots.values():
        slot.generation += 1  # voids the armed run
        sched._fire(slot, asyncio.get_running_loop().time())
    assert sched.in_flight == 3
    await sched.stop(0.1)
    assert sched.in_flight == 0
    started = sum(value(metrics, "vantage_probes_started_total", target=t.name) or 0 for t in ts)
    finished = sum(value(metrics, "vantage_probes_total", target=t.name, outcome=o.value) or 0
                   for t in ts for o in Outcome)
    assert started == 3
    assert finished == 0
    assert sum(value(metrics, "vantage_probes_cancelled_total", target=t.name) or 0
               for t in ts) == 3
    assert value(metrics, "vantage_probes_in_flight") == 0


async def test_apply_keeps_unchanged_restarts_changed_removes_removed() -> None:
    async def probe(t: Target) -> ProbeResult:
        return ok()

    a, b, c = targets(3, "10s", "1s")
    metrics = Metrics(process_collectors=False)
    sched = Scheduler(probe, metrics)
    sched.apply([a, b, c])
    armed = {name: (slot.serial, slot.generation, slot.due)
             for name, slot in sched._slots.items()}
    removed = sched._slots["t2"]
    (b2,) = targets(1, "20s", "1s", prefix="t")  # same name as a, new interval
    changed = load_config_text(
        "targets: [{name: t1, url: 'http://127.0.0.1:9/', interval: 10s, timeout: 1s}]").targets
    sched.apply([a, *changed])
    assert set(sched._slots) == {"t0", "t1"}
    t0, t1 = sched._slots["t0"], sched._slots["t1"]
    assert (t0.serial, t0.generation, t0.due) == armed["t0"]  # unchanged: same run, same phase
    assert t1.serial != armed["t1"][0]  # changed: a new slot, restarted
    assert removed.removed
    assert removed.serial not in sched._by_serial  # its armed run is void
    assert len(sched._heap) == 4  # t0, the new t1; the old t1's and t2's entries, void
    del b, b2
    await sched.stop(0)


async def test_many_targets_each_run_on_their_own_grid_from_one_heap() -> None:
    """300 targets share one loop timer: every one runs at each of its grid slots, none twice,
    and the heap holds exactly one armed run per target."""
    starts: dict[str, list[float]] = {}
    sched: Scheduler

    async def probe(t: Target) -> ProbeResult:
        starts.setdefault(t.name, []).append(next(
            s.next_wall for s in sched._slots.values() if s.target is t))
        return ok()

    ts = targets(300, "100ms", "50ms")
    sched, metrics = scheduled(probe, ts)
    await asyncio.sleep(0.55)
    await sched.stop(0.1)
    assert set(starts) == {t.name for t in ts}
    for name, walls in starts.items():
        assert 4 <= len(walls) <= 6, (name, walls)
        # next_wall at each start is the following slot: consecutive starts are one interval
        # apart, never the same slot twice
        gaps = [b - a for a, b in itertools.pairwise(walls)]
        assert all(abs(g - 0.1) < 1e-6 for g in gaps), (name, gaps)
    skipped = {t.name: metrics.series(t.name).skipped for t in ts}  # type: ignore[union-attr]
    assert sum(skipped.values()) == 0, {k: v for k, v in skipped.items() if v}


async def test_a_failing_run_does_not_stop_the_other_targets_timers() -> None:
    """All targets share one wake-up: an exception while firing one (a bug in an observer)
    must not leave the others unarmed."""
    started: list[str] = []

    class Exploding(Metrics):
        def probe_started(self, name: str) -> None:
            if name == "t0":
                raise RuntimeError("observer bug")
            started.append(name)
            super().probe_started(name)

    async def probe(t: Target) -> ProbeResult:
        return ok()

    ts = targets(5, "100ms", "50ms")
    metrics = Exploding(process_collectors=False)
    metrics.set_targets(ts)
    sched = Scheduler(probe, metrics)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        sched.apply(ts)
        await asyncio.sleep(0.45)
    finally:
        loop.set_exception_handler(None)
        await sched.stop(0.1)
    assert errors, "the observer's exception reaches the loop's handler"
    for name in ("t1", "t2", "t3", "t4"):
        assert started.count(name) >= 3, (name, started.count(name))
