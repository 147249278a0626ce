"""Metric families and their fast exposition.

prometheus-client renders about 11 us a line on the event loop: 10,000 targets' worth of these
series took seconds and stalled every probe. So the per-target series live here as plain numbers,
and each target keeps its own pre-rendered text for every family, refreshed when that target's
probe finishes (tens of microseconds, spread over the probes). A scrape snapshots those chunks
in one cheap pass and streams them grouped by family, in slices, yielding to the event loop in
between, so even 10,000 targets' worth never stalls probing. prometheus-client still provides the
process and platform collectors (a handful of lines) and the text parser used in tests.

Exposition lines look like::

    vantage_probes_total{target="checkout-api",outcome="timeout"} 3
    vantage_probe_duration_seconds_bucket{target="checkout-api",outcome="success",le="0.25"} 41

No ``_created`` series are emitted. Every per-target series except the duration histogram exists
from the moment a target is configured, so ``rate()`` and ``absent()`` work before any failure.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

import prometheus_client
from prometheus_client import openmetrics

from exporter import __version__
from exporter.config import Target
from exporter.outcome import OUTCOMES, PHASES, ProbeResult

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_OUTCOME_INDEX = {o: i for i, o in enumerate(OUTCOMES)}

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True)
class Family:
    name: str  # the family name; counters' samples add _total
    type: str
    help: str

    def header(self, openmetrics_format: bool) -> str:
        name = self.name
        if openmetrics_format and self.type == "counter":
            name = name.removesuffix("_total")
        return f"# HELP {name} {self.help}\n# TYPE {name} {self.type}\n"


# Per-target families, in exposition order. Index = position in TargetSeries.chunks.
PROBES_TOTAL, STARTED, DURATION, SUCCESS, LAST_OUTCOME, PHASE, STATUS, CERT, LAST_RUN, \
    SKIPPED, CANCELLED, INFO = range(12)
TARGET_FAMILIES = (
    Family("vantage_probes_total", "counter", "Finished probes by outcome class."),
    Family("vantage_probes_started_total", "counter",
           "Probes started: finished (all outcomes) + cancelled + in flight (0 or 1)."),
    Family("vantage_probe_duration_seconds", "histogram", "Wall time of each probe by outcome."),
    Family("vantage_probe_success", "gauge", "1 if the last probe was a success, else 0."),
    Family("vantage_probe_last_outcome", "gauge",
           "1 for the last probe's outcome class, 0 for the others."),
    Family("vantage_probe_phase_duration_seconds", "gauge", "Phase durations of the last probe."),
    Family("vantage_probe_http_status_code", "gauge", "HTTP status of the last probe, 0 if none."),
    Family("vantage_probe_tls_cert_expiry_timestamp_seconds", "gauge",
           "Earliest certificate expiry seen in the peer chain by the last TLS probe."),
    Family("vantage_probe_last_run_timestamp_seconds", "gauge",
           "Unix time the last probe finished."),
    Family("vantage_probes_skipped_total", "counter",
           "Scheduled runs not started (previous run still going, no free slot, or shutdown)."),
    Family("vantage_probes_cancelled_total", "counter",
           "Probes cancelled by shutdown or reload (not an outcome)."),
    Family("vantage_target_info", "gauge", "Configured targets and their labels; always 1."),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _le(bound: float) -> str:
    """Bucket bounds as prometheus-client writes them ("1.0", "0.005", "+Inf")."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above the largest bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str, les: tuple[str, ...]) -> str:
        return _hist_template(name, labels, les) % self.values()

    def values(self) -> tuple[float, ...]:
        """The numbers :func:`_hist_template` takes: cumulative buckets, sum, count."""
        cum = tuple(accumulate(self.counts))
        return (*cum, self.sum, cum[-1])


def _hist_template(name: str, labels: str, les: tuple[str, ...]) -> str:
    p = labels.replace("%", "%%")
    sep = "," if p else ""
    lab = f"{{{p}}}" if p else ""
    return "".join([*(f'{name}_bucket{{{p}{sep}le="{le}"}} %d\n' for le in les),
                    f"{name}_sum{lab} %r\n{name}_count{lab} %d\n"])


_PHASE_DEFAULTS = (0.0,) * len(PHASES)  # a crash or supervisor timeout reports no phases


class _Templates:
    """One target's exposition lines with ``%`` holes for the numbers, built once per target:
    refreshing a family after a probe is then a single C-level ``%`` (a few microseconds), not
    a Python loop formatting each line. Only for the families every probe changes: the ones
    driven by the outcome, status and certificate change rarely and are formatted directly
    (templates cost memory: about 2 KB a target, and 1 KB more per outcome it has seen)."""

    __slots__ = ("cancelled", "hist", "last_run", "phase", "skipped", "started", "total")

    def __init__(self, label: str) -> None:
        p = label.replace("%", "%%")
        self.total = "".join(f'vantage_probes_total{{{p},outcome="{o.value}"}} %d\n'
                             for o in OUTCOMES)
        self.phase = "".join(f'vantage_probe_phase_duration_seconds{{{p},phase="{ph}"}} %r\n'
                             for ph in PHASES)
        self.last_run = f"vantage_probe_last_run_timestamp_seconds{{{p}}} %r\n"
        self.started = f"vantage_probes_started_total{{{p}}} %d\n"
        self.skipped = f"vantage_probes_skipped_total{{{p}}} %d\n"
        self.cancelled = f"vantage_probes_cancelled_total{{{p}}} %d\n"
        self.hist: dict[int, str] = {}  # per outcome index, made when it first happens


class TargetSeries:
    """The numbers of one target and their rendered text, one chunk per family."""

    __slots__ = (
        "cancelled",
        "cert_expiry",
        "chunks",
        "counts",
        "hist_text",
        "hists",
        "label",
        "last_outcome",
        "last_run",
        "phases",
        "skipped",
        "started",
        "status",
        "target",
        "tmpl",
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self.label = f'target="{escape(target.name)}"'
        self.tmpl = _Templates(self.label)
        self.counts = [0] * len(OUTCOMES)
        self.started = 0
        self.skipped = 0
        self.cancelled = 0
        self.hists: dict[int, _Histogram] = {}
        self.hist_text: dict[int, str] = {}
        self.last_outcome = -1
        self.status = 0
        self.phases: dict[str, float] = {}
        self.cert_expiry = 0.0
        self.last_run = 0.0
        # Replaced, never mutated: a scrape grabs every target's tuple in one synchronous pass
        # (a consistent snapshot) and then renders it in slices while probes go on.
        self.chunks: tuple[str, ...] = ("",) * len(TARGET_FAMILIES)

    def set(self, index: int, text: str) -> None:
        chunks = list(self.chunks)
        chunks[index] = text
        self.chunks = tuple(chunks)


class Metrics:
    """Holds every series and renders ``/metrics``. Tests build a fresh one per case.

    The scheduler reports through ``probe_started``, ``probe_finished``, ``probe_skipped``,
    ``probe_cancelled`` and ``observe_lag``; the daemon through ``set_targets`` and
    ``config_reloaded``.
    """

    def __init__(self, buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                       1, 2.5, 5, 10),
                 *, process_collectors: bool = True) -> None:
        self._series: dict[str, TargetSeries] = {}
        self._set_buckets(buckets)
        self.lag = _Histogram(tuple(float(b) for b in LAG_BUCKETS))
        self._lag_les = (*(_le(b) for b in LAG_BUCKETS), "+Inf")
        self.in_flight = 0
        self.tasks = 0  # asyncio tasks alive, set by the server before each render
        self.reload_ok = 0
        self.reload_ok_at = 0.0
        self.shard: tuple[int, int] = (0, 1)
        # prometheus-client only for the process/platform collectors, on our own registry.
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        if process_collectors:
            prometheus_client.ProcessCollector(registry=self.registry)
            prometheus_client.PlatformCollector(registry=self.registry)
        self._build = (f'version="{escape(__version__)}",'
                       f'python="{escape(platform.python_version())}",'
                       f'uvloop="{escape(importlib.metadata.version("uvloop"))}"')

    def _set_buckets(self, buckets: tuple[float, ...]) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._les = (*(_le(b) for b in self.buckets), "+Inf")

    # -- configuration ------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target], buckets: tuple[float, ...] | None = None
                    ) -> None:
        """Add new targets (series at 0), drop removed ones, refresh changed definitions."""
        if buckets is not None and tuple(float(b) for b in buckets) != self.buckets:
            self._set_buckets(buckets)
            for old in self._series.values():  # new bucket layout: histograms cannot carry over
                old.hists.clear()
                old.hist_text.clear()
                old.tmpl.hist.clear()
                self._render_result(old, None)
        new: dict[str, TargetSeries] = {}
        for t in targets:
            s = self._series.get(t.name)
            if s is None:
                s = TargetSeries(t)
                self._render_all(s)
            elif s.target != t:
                s.target = t
                self._render_info(s)
            new[t.name] = s
        self._series = new

    def config_reloaded(self, ok: bool) -> None:
        self.reload_ok = int(ok)
        if ok:
            self.reload_ok_at = time.time()

    # -- events from the scheduler ------------------------------------------------------------

    def probe_started(self, name: str) -> None:
        s = self._series.get(name)
        if s is not None:
            s.started += 1
            s.set(STARTED, s.tmpl.started % s.started)
        self.in_flight += 1

    def probe_finished(self, name: str, result: ProbeResult) -> None:
        self.in_flight -= 1
        s = self._series.get(name)
        if s is None:  # removed by a reload while in flight
            return
        i = _OUTCOME_INDEX[result.outcome]
        s.counts[i] += 1
        h = s.hists.get(i)
        if h is None:
            h = s.hists[i] = _Histogram(self.buckets)
        h.observe(result.duration)
        same = (s.last_outcome == i and s.status == result.status_code
                and (not result.tls_cert_expiry or s.cert_expiry == result.tls_cert_expiry))
        s.last_outcome = i
        s.status = result.status_code
        s.phases = result.phases
        if result.tls_cert_expiry:
            s.cert_expiry = result.tls_cert_expiry
        s.last_run = time.time()
        self._render_result(s, i, changed_state=not same)

    def probe_cancelled(self, name: str) -> None:
        """A probe cancelled by shutdown or reload: not an outcome, but accounted for."""
        self.in_flight -= 1
        s = self._series.get(name)
        if s is not None:
            s.cancelled += 1
            s.set(CANCELLED, s.tmpl.cancelled % s.cancelled)

    def probe_skipped(self, name: str) -> None:
        s = self._series.get(name)
        if s is not None:
            s.skipped += 1
            s.set(SKIPPED, s.tmpl.skipped % s.skipped)

    def observe_lag(self, seconds: float) -> None:
        self.lag.observe(max(0.0, seconds))

    # -- rendering ----------------------------------------------------------------------------

    def _render_all(self, s: TargetSeries) -> None:
        t = s.tmpl
        chunks = list(s.chunks)
        chunks[STARTED] = t.started % s.started
        chunks[SKIPPED] = t.skipped % s.skipped
        chunks[CANCELLED] = t.cancelled % s.cancelled
        s.chunks = tuple(chunks)
        s.hist_text = {i: self._hist_text(s, i) for i in s.hists}
        self._render_result(s, None)
        self._render_info(s)

    def _render_info(self, s: TargetSeries) -> None:
        t = s.target
        extra = "".join(f',{k}="{escape(v)}"' for k, v in t.labels)
        s.set(INFO, f'vantage_target_info{{{s.label},url="{escape(t.url)}",'
                    f'module="{escape(t.module)}"{extra}}} 1\n')

    def _hist_text(self, s: TargetSeries, i: int) -> str:
        tmpl = s.tmpl.hist.get(i)
        if tmpl is None:
            tmpl = s.tmpl.hist[i] = _hist_template(
                "vantage_probe_duration_seconds", f'{s.label},outcome="{OUTCOMES[i].value}"',
                self._les)
        return tmpl % s.hists[i].values()

    def _render_result(self, s: TargetSeries, observed: int | None, *,
                       changed_state: bool = True) -> None:
        """Refresh the families a finished probe changes (``observed``: the outcome index whose
        histogram moved); one new chunks tuple, swapped in at once. Without ``changed_state``
        (same outcome, status and certificate as the last probe: the common case) the
        families that only those drive are left as they are: each target's text is cold in
        the CPU cache by the time its next probe ends, so bytes not rewritten are time saved."""
        t = s.tmpl
        if observed is not None:
            s.hist_text[observed] = self._hist_text(s, observed)
        ht = s.hist_text
        chunks = list(s.chunks)
        chunks[PROBES_TOTAL] = t.total % tuple(s.counts)
        chunks[DURATION] = "".join([ht[k] for k in sorted(ht)])
        if changed_state:
            lab = s.label
            chunks[SUCCESS] = f"vantage_probe_success{{{lab}}} {int(s.last_outcome == 0)}\n"
            chunks[LAST_OUTCOME] = "".join(
                f'vantage_probe_last_outcome{{{lab},outcome="{o.value}"}} '
                f"{int(i == s.last_outcome)}\n" for i, o in enumerate(OUTCOMES))
            chunks[STATUS] = f"vantage_probe_http_status_code{{{lab}}} {s.status}\n"
            chunks[CERT] = (f"vantage_probe_tls_cert_expiry_timestamp_seconds{{{lab}}} "
                            f"{_num(s.cert_expiry)}\n")
        chunks[PHASE] = t.phase % tuple(map(s.phases.get, PHASES, _PHASE_DEFAULTS))
        chunks[LAST_RUN] = t.last_run % float(s.last_run)
        s.chunks = tuple(chunks)

    def render(self, openmetrics_format: bool = False) -> bytes:
        """The whole exposition at once (tests, small configs); the server streams
        :meth:`render_parts` instead."""
        return b"".join(self.render_parts(openmetrics_format))

    def render_parts(self, openmetrics_format: bool = False, slice_size: int = 1000
                     ) -> Iterator[bytes]:
        """A consistent snapshot now, rendered lazily in slices of ``slice_size`` targets.

        Taking the snapshot is one pass over references (immutable tuples), so it is
        consistent across families (e.g. started vs finished counts) however long the
        rendering takes; the caller can yield to the event loop between parts.
        """
        om = openmetrics_format
        snapshot = [s.chunks for s in self._series.values()]
        tail = self._render_globals(om, len(snapshot)).encode()
        # the process/platform collectors' few lines; OpenMetrics' generator ends with "# EOF"
        generate: Callable[[prometheus_client.CollectorRegistry], bytes] = (
            openmetrics.exposition.generate_latest if om else prometheus_client.generate_latest)
        tail += generate(self.registry)

        def parts() -> Iterator[bytes]:
            for i, fam in enumerate(TARGET_FAMILIES):
                yield fam.header(om).encode()
                for k in range(0, len(snapshot), slice_size):
                    yield "".join([c[i] for c in snapshot[k:k + slice_size]]).encode()
            yield tail

        return parts()

    def _render_globals(self, om: bool, n_targets: int) -> str:
        def gauge(name: str, help_: str, value: float, labels: str = "") -> str:
            lab = f"{{{labels}}}" if labels else ""
            return f"{Family(name, 'gauge', help_).header(om)}{name}{lab} {_num(value)}\n"

        index, count = self.shard
        return "".join((
            Family("vantage_scheduler_lag_seconds", "histogram",
                   "Actual start minus planned start of every probe.").header(om),
            self.lag.lines("vantage_scheduler_lag_seconds", "", self._lag_les),
            gauge("vantage_probes_in_flight", "Probes running now.", self.in_flight),
            gauge("vantage_targets", "Targets configured in this shard.", n_targets),
            gauge("vantage_asyncio_tasks",
                  "Tasks alive on the event loop (bounded by in-flight probes + a constant).",
                  self.tasks),
            gauge("vantage_config_last_reload_successful",
                  "1 if the last config (re)load succeeded.", self.reload_ok),
            gauge("vantage_config_last_reload_success_timestamp_seconds",
                  "Unix time of the last successful config (re)load.", self.reload_ok_at),
            gauge("vantage_build_info", "Build information; always 1.", 1, self._build),
            gauge("vantage_shard_info", "This instance's shard; always 1.", 1,
                  f'index="{index}",count="{count}"'),
        ))

    # -- reading back (status page, tests) ----------------------------------------------------

    def series_count(self) -> int:
        return len(self._series)

    def series(self, name: str) -> TargetSeries | None:
        return self._series.get(name)
