"""When probes run: an absolute grid per target, a concurrency limit, and supervision.

- Target ``t`` runs at ``offset(t) + k * interval`` in wall-clock time, where ``offset`` is a
  stable hash of its name within the interval: N targets spread evenly, restarts keep phase and
  nothing drifts (each slot is computed from the grid, not from the previous run).
- One heap of due times for all targets and one loop timer for the earliest, not a sleeping
  task (or a loop timer) per target: tasks exist only for probes in flight, and the heap holds
  plain ``(time, serial, generation)`` tuples, which the cyclic GC does not track. (A loop timer
  per target is five GC-tracked objects per target, re-made every interval: at 10,000 targets
  each full collection walked them, tens of milliseconds with the loop stopped.)
- At most ``max_concurrency`` probes in flight. A run waiting for a free slot when its next slot
  comes is skipped (counted), never queued up behind itself. So is a run whose previous probe is
  still going.
- Every probe is its own task under :meth:`Scheduler._supervise`: an exception escaping the probe
  becomes outcome ``crash`` (traceback logged, rate-limited per target), a probe overrunning its
  deadline is cancelled and counted as ``timeout``; nothing reaches other targets.

The scheduler reports to an :class:`Observer` (the metrics) and does not import metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import itertools
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from exporter.config import Target, format_duration
from exporter.outcome import EXPLANATIONS, Outcome, ProbeResult

log = logging.getLogger("exporter.scheduler")

ProbeFn = Callable[[Target], Awaitable[ProbeResult]]

#: Extra time a probe gets past its own deadline before the supervisor cancels it. The probe
#: enforces ``timeout`` itself (and names the phase it hit); this is the backstop.
DEADLINE_SLACK = 0.25
#: Repeat crash tracebacks of one target are logged at most this often.
CRASH_LOG_EVERY = 300.0
#: Runs due within this much of the loop's clock fire in the same wake-up (loop timers have
#: millisecond resolution and may wake a little early).
_DUE_SLACK = 0.001


class Observer(Protocol):
    def probe_started(self, name: str) -> None: ...
    def probe_finished(self, name: str, result: ProbeResult) -> None: ...
    def probe_cancelled(self, name: str) -> None: ...
    def probe_skipped(self, name: str) -> None: ...
    def observe_lag(self, seconds: float) -> None: ...


def stable_hash(name: str) -> int:
    """64-bit hash of a name, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def grid_offset(name: str, interval: float) -> float:
    """Where in each interval this target runs: stable, and uniform over targets."""
    return (stable_hash(name) / 2**64) * interval


def next_slot(now: float, offset: float, interval: float) -> float:
    """The first grid time ``offset + k * interval`` strictly after ``now``."""
    k = (now - offset) // interval + 1
    when = offset + k * interval
    # With ``now`` itself a slot, rounding can land on ``now`` again (give or take an ulp):
    # a grid time within a millionth of an interval of ``now`` is ``now``.
    return when if when - now > interval * 1e-6 else when + interval


@dataclass
class _CrashLog:
    last_logged: float = 0.0
    suppressed: int = 0


class _Slot:
    __slots__ = (
        "crash_log",
        "due",
        "generation",
        "last_result",
        "next_wall",
        "offset",
        "planned",
        "removed",
        "serial",
        "target",
        "task",
        "waiting",
    )

    def __init__(self, target: Target, serial: int) -> None:
        self.target = target
        self.serial = serial  # this slot's key in the heap's entries
        self.offset = grid_offset(target.name, target.interval)
        self.generation = 0  # bumped on every (re)arm and on removal: older heap entries are void
        self.due = 0.0  # loop time of the armed run
        self.task: asyncio.Task[None] | None = None
        self.planned = 0.0  # loop time this run was due
        self.waiting = False  # due, but no free concurrency slot yet
        self.next_wall = 0.0
        self.last_result: ProbeResult | None = None
        self.crash_log = _CrashLog()
        self.removed = False


class Scheduler:
    def __init__(self, probe: ProbeFn, observer: Observer, *, max_concurrency: int = 512,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._probe = probe
        self._observer = observer
        self.max_concurrency = max_concurrency
        self._clock = wall_clock
        self._slots: dict[str, _Slot] = {}
        self._by_serial: dict[int, _Slot] = {}
        self._serials = itertools.count()
        self._heap: list[tuple[float, int, int]] = []  # (loop time due, serial, generation)
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = math.inf
        self._queue: collections.deque[_Slot] = collections.deque()
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- configuration ------------------------------------------------------------------------

    def apply(self, targets: Iterable[Target], max_concurrency: int | None = None) -> None:
        """Switch to a new target list. Unchanged targets keep their timer (their phase);
        changed ones restart; removed ones stop (an in-flight probe of theirs is cancelled)."""
        self._loop = asyncio.get_running_loop()
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency
        wanted = {t.name: t for t in targets}
        for name, slot in list(self._slots.items()):
            if wanted.get(name) != slot.target:
                self._drop(slot)
                del self._slots[name]
        for name, target in wanted.items():
            if name not in self._slots and not self._stopping:
                slot = self._slots[name] = _Slot(target, next(self._serials))
                self._by_serial[slot.serial] = slot
                self._arm(slot, self._clock())
        self._drain()

    def _drop(self, slot: _Slot) -> None:
        slot.removed = True
        slot.waiting = False
        slot.generation += 1  # its heap entry is void; the heap drops it when it comes due
        self._by_serial.pop(slot.serial, None)
        if slot.task is not None:
            # Accounted as cancelled now, not when the task gets round to it: a changed target
            # restarts at once, and its old probe must not count as a second one in flight.
            slot.task.cancel()
            slot.task = None
            self._observer.probe_cancelled(slot.target.name)

    # -- timing -------------------------------------------------------------------------------

    def _arm(self, slot: _Slot, after_wall: float) -> None:
        assert self._loop is not None
        when = next_slot(after_wall, slot.offset, slot.target.interval)
        slot.next_wall = when
        loop_when = self._loop.time() + (when - self._clock())
        slot.generation += 1
        slot.due = loop_when
        heapq.heappush(self._heap, (loop_when, slot.serial, slot.generation))
        if loop_when < self._wake_at:
            self._set_wake(loop_when)

    def _set_wake(self, loop_when: float) -> None:
        assert self._loop is not None
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = loop_when
        self._wake = self._loop.call_at(loop_when, self._tick)

    def _tick(self) -> None:
        """Fire every run that is due, then sleep until the next one."""
        assert self._loop is not None
        # -inf while firing: the runs that _fire re-arms go on the heap without a wake-up each
        self._wake, self._wake_at = None, -math.inf
        heap, by_serial = self._heap, self._by_serial
        horizon = self._loop.time() + _DUE_SLACK
        try:
            while heap and heap[0][0] <= horizon:
                when, serial, generation = heapq.heappop(heap)
                slot = by_serial.get(serial)
                if slot is not None and slot.generation == generation:
                    self._fire(slot, when)
        finally:
            # Even if a _fire raised (a bug: the loop logs it), the other targets stay armed.
            self._wake_at = math.inf
            if heap and not self._stopping:
                self._set_wake(heap[0][0])

    def _fire(self, slot: _Slot, planned: float) -> None:
        if slot.removed or self._stopping:
            return
        # Arm the next run first, from the grid (no drift); if the loop stalled past whole
        # intervals, the missed ones are simply not run.
        self._arm(slot, max(slot.next_wall + slot.target.interval / 2, self._clock()))
        if slot.task is not None or slot.waiting:
            self._observer.probe_skipped(slot.target.name)
            if slot.task is not None:
                return
        slot.planned = planned
        if len(self._running) < self.max_concurrency:
            slot.waiting = False
            self._start(slot)
        elif not slot.waiting:
            slot.waiting = True
            self._queue.append(slot)

    def _drain(self) -> None:
        while self._queue and len(self._running) < self.max_concurrency and not self._stopping:
            slot = self._queue.popleft()
            if slot.waiting and not slot.removed:
                slot.waiting = False
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        assert self._loop is not None
        self._observer.observe_lag(self._loop.time() - slot.planned)
        self._observer.probe_started(slot.target.name)
        task = self._loop.create_task(self._supervise(slot), name=f"probe:{slot.target.name}")
        slot.task = task
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._drain()

    # -- supervision --------------------------------------------------------------------------

    async def _supervise(self, slot: _Slot) -> None:
        target = slot.target
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(target.timeout + DEADLINE_SLACK):
                result = await self._probe(target)
        except asyncio.CancelledError:
            if not slot.removed:  # a removed slot was accounted for in _drop
                slot.task = None
                self._observer.probe_cancelled(target.name)
            raise
        except TimeoutError:
            # The probe ignored its own deadline; the supervisor cut it off.
            result = ProbeResult(Outcome.TIMEOUT, loop.time() - start,
                                 f"deadline of {format_duration(target.timeout)} passed "
                                 "(probe cancelled by the supervisor)")
        except Exception as exc:
            result = ProbeResult(Outcome.CRASH, loop.time() - start,
                                 f"{type(exc).__name__}: {exc}"[:500])
            self._log_crash(slot, exc)
        if slot.removed:  # finished in the moment between a reload's cancel and delivery
            return
        slot.task = None
        previous, slot.last_result = slot.last_result, result
        self._observer.probe_finished(target.name, result)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("probe of %r: %s in %.1f ms%s", target.name, result.outcome.value,
                      result.duration * 1000, f": {result.detail}" if result.detail else "",
                      extra={"target": target.name, "outcome": result.outcome.value})
        if previous is None or previous.outcome is not result.outcome:
            _log_transition(target, previous, result)

    def _log_crash(self, slot: _Slot, exc: Exception) -> None:
        now = time.monotonic()
        cl = slot.crash_log
        if cl.last_logged and now - cl.last_logged < CRASH_LOG_EVERY:
            cl.suppressed += 1
            return
        more = f" ({cl.suppressed} more crashes since the last traceback)" if cl.suppressed else ""
        cl.last_logged, cl.suppressed = now, 0
        log.error("probe of target %r crashed: outcome crash, other targets unaffected%s\n%s",
                  slot.target.name, more,
                  "".join(traceback.format_exception(exc)).rstrip(),
                  extra={"target": slot.target.name, "outcome": "crash"})

    # -- shutdown -----------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """No new probes; in-flight ones get ``grace`` seconds, then are cancelled."""
        self._stopping = True
        if self._wake is not None:
            self._wake.cancel()
        self._wake, self._wake_at = None, math.inf
        self._heap.clear()
        for slot in self._slots.values():
            if slot.waiting:
                slot.waiting = False
                self._observer.probe_skipped(slot.target.name)
        self._queue.clear()
        running = set(self._running)
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)

    # -- reading ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def slots(self) -> list[tuple[Target, ProbeResult | None, float, bool]]:
        """(target, last result, next run wall time, running now) for the status page."""
        return [(s.target, s.last_result, s.next_wall, s.task is not None)
                for s in self._slots.values()]


def _log_transition(target: Target, previous: ProbeResult | None, result: ProbeResult) -> None:
    before = previous.outcome.value if previous else "none"
    extra = {"target": target.name, "outcome": result.outcome.value, "previous": before}
    if result.ok:
        log.info("target %r is now success (was %s)", target.name, before, extra=extra)
    else:
        log.warning("target %r is now %s (was %s): %s; %s", target.name, result.outcome.value,
                    before, EXPLANATIONS[result.outcome], result.detail, extra=extra)
