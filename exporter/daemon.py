"""The daemon: load, start, wait, stop, in that order, within a grace period.

Signal handlers only set events. ``run()`` reads top to bottom::

    load config -> start HTTP server -> schedule probes -> ready
    wait for SIGTERM/SIGINT (SIGHUP, POST /-/reload, file changes reload meanwhile)
    not ready -> stop scheduling, give in-flight probes the grace -> close server and sessions
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter import __version__
from exporter.config import Config, ConfigError, Target, load_config
from exporter.demo import add_demo_routes, demo_config
from exporter.metrics import Metrics
from exporter.outcome import ProbeResult
from exporter.probes.http import HTTPProber
from exporter.scheduler import ProbeFn, Scheduler
from exporter.server import make_app
from exporter.sharding import Shard

log = logging.getLogger("exporter.daemon")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
WATCH_POLL = 1.0  # seconds between checks of the config file
WATCH_SETTLE = 0.5  # a change must hold still this long before it is read
REFREEZE_MARGIN = 2.0  # after a (re)load, freeze again at the longest interval plus this


@dataclass(frozen=True)
class Options:
    config_path: str | None = None
    host: str | None = None  # None: all interfaces
    port: int = 9469
    shard: Shard = Shard()  # noqa: RUF009 -- frozen, so sharing one default is safe
    watch: bool = False
    lifecycle: bool = False
    shutdown_grace: float = 5.0


class Daemon:
    """``probe`` replaces the HTTP probe (tests inject failing probes to prove isolation)."""

    def __init__(self, options: Options, probe: ProbeFn | None = None) -> None:
        self.options = options
        self.demo = options.config_path is None
        self.lifecycle_enabled = options.lifecycle
        self.ready = False
        self.metrics = Metrics()
        self.metrics.shard = (options.shard.index, options.shard.count)
        self.config: Config | None = None
        self._prober = HTTPProber()
        self._scheduler = Scheduler(probe or self._prober.probe, self.metrics)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._port = options.port
        self._refreeze: asyncio.TimerHandle | None = None

    # -- Host protocol (server.py) ------------------------------------------------------------

    def slots(self) -> list[tuple[Target, ProbeResult | None, float, bool]]:
        return self._scheduler.slots()

    async def reload(self) -> tuple[bool, str]:
        """Read, validate and swap in the config; on any problem keep the running one."""
        async with self._reload_lock:
            try:
                config = await self._load()
            except ConfigError as exc:
                self.metrics.config_reloaded(False)
                for problem in exc.problems:
                    log.error("config rejected, keeping the running one: %s",
                              problem.render(exc.source))
                return False, str(exc)
            await self._apply(config)
            n = self.metrics.series_count()
            return True, f"config reloaded: {n} targets in this shard"

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> int:
        asyncio.get_running_loop().set_exception_handler(_exception_handler)
        self._install_signals()  # early: a SIGHUP's default action would kill us mid-startup
        try:
            config = await self._load()
        except ConfigError as exc:
            log.error("invalid config, not starting:\n%s", exc)
            self._remove_signals()
            return EXIT_CONFIG
        app = make_app(self)
        if self.demo:
            add_demo_routes(app)
        # shutdown_timeout: aiohttp waits this long for in-flight handlers (default 60 s);
        # a slow handler must not hold shutdown hostage past our grace.
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.options.shutdown_grace)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.options.host, self.options.port)
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.options.host or "",
                      self.options.port, exc.strerror or exc)
            await runner.cleanup()
            self._remove_signals()
            return EXIT_FAILURE
        self._port = _bound_port(runner, self.options.port)
        if self.demo:
            config = demo_config(self._port)
            log.warning("demo mode: no --config and no ./vantage.yaml, probing %d demo targets "
                        "served by this exporter; open http://127.0.0.1:%d/",
                        len(config.targets), self._port)
        try:
            await self._apply(config)
            if self.options.watch and not self.demo:
                self._spawn(self._watch())
            self.ready = True
            log.info("vantage-exporter %s listening on %s:%d, %d targets in shard %d/%d",
                     __version__, self.options.host or "*", self._port,
                     self.metrics.series_count(), self.options.shard.index,
                     self.options.shard.count)
            await self._stop.wait()
        finally:
            await self._shutdown(runner)
        return EXIT_OK

    async def _shutdown(self, runner: web.AppRunner) -> None:
        self.ready = False
        if self._refreeze is not None:
            self._refreeze.cancel()
        log.info("shutting down: no new probes, %d in flight get up to %.1fs",
                 self._scheduler.in_flight, self.options.shutdown_grace)
        stop = asyncio.ensure_future(self._scheduler.stop(self.options.shutdown_grace))
        force = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({stop, force}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.done():  # second signal: cut the grace short
            log.warning("second signal: cancelling in-flight probes now")
            await self._scheduler.stop(0)
            await stop
        force.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await force
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await runner.cleanup()
        await self._prober.close()
        self._remove_signals()
        log.info("stopped")

    def request_stop(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    # -- config -------------------------------------------------------------------------------

    async def _load(self) -> Config:
        if self.demo:
            return demo_config(self._port)
        assert self.options.config_path is not None
        # reading files (config, secrets, CA bundles) is blocking: keep it off the loop
        return await asyncio.to_thread(load_config, self.options.config_path)

    async def _apply(self, config: Config) -> None:
        targets = self.options.shard.select(config.targets)
        await self._prober.prepare(targets)
        self.metrics.set_targets(targets, config.buckets)
        self._scheduler.apply(targets, config.max_concurrency)
        self.config = config
        self.metrics.config_reloaded(True)
        _freeze_long_lived()
        # Each target's first probe makes objects that live as long as the target (request
        # plan, histograms): freeze once more when every target has run once.
        if self._refreeze is not None:
            self._refreeze.cancel()
        self._refreeze = None
        if targets:
            self._refreeze = asyncio.get_running_loop().call_later(
                max(t.interval for t in targets) + REFREEZE_MARGIN, _freeze_long_lived)
        log.info("config loaded from %s: %d targets (%d in this shard)", config.source,
                 len(config.targets), len(targets))

    # -- triggers -----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        if self.ready:
            self._spawn(self.reload())
        else:
            log.warning("SIGHUP during startup or shutdown: not reloading")

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Reload when the file changes: in-place writes and ConfigMap ``..data`` swaps alike.

        Polls a fingerprint of the resolved file (inode, size, mtime, content hash), so a
        symlink swap that points at a new file is seen, and waits until it holds still for
        WATCH_SETTLE seconds before reloading (editors and kubelet write in steps).
        """
        path = self.options.config_path
        assert path is not None
        last = await asyncio.to_thread(_fingerprint, path)
        while True:
            await asyncio.sleep(WATCH_POLL)
            now = await asyncio.to_thread(_fingerprint, path)
            if now == last:
                continue
            while True:  # debounce
                await asyncio.sleep(WATCH_SETTLE)
                settled = await asyncio.to_thread(_fingerprint, path)
                if settled == now:
                    break
                now = settled
            last = now
            log.info("config file %s changed, reloading", path)
            await self.reload()


def _freeze_long_lived() -> None:
    """Keep the config, the series and the imported modules out of the cyclic GC's way.

    A full collection walks every tracked object: with 10,000 targets that is ~150,000 objects,
    ~90 ms with the event loop stopped, whenever results age into the oldest generation.
    Frozen objects are never walked again (reference counting still frees them; config and
    series objects hold no cycles). Collect first so that today's garbage (a replaced config's
    cycles) is not frozen forever: one full collection per (re)load, off the probe path.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Route the loop's unhandled errors to the log, except uvloop's TLS teardown noise.

    When a probe is cancelled (deadline, reload, shutdown) in the middle of a TLS handshake,
    uvloop's SSLProtocol may still try to write to the closed transport, or leave the failed
    handshake's future unread, and reports that as "Fatal error on SSL protocol" / "Future
    exception was never retrieved" (MagicStack/uvloop#471 and related). The probe's outcome is
    already recorded by then; at debug level these say nothing an operator can act on.
    """
    exc = context.get("exception")
    message = str(context.get("message", ""))
    teardown = (
        (message.startswith("Fatal error on SSL") and isinstance(exc, RuntimeError | OSError))
        or (message.startswith("Future exception was never retrieved")
            and isinstance(exc, ssl.SSLError | ConnectionError)))
    if teardown:
        log.debug("ignored TLS teardown noise from the event loop: %s: %r", message, exc)
        return
    loop.default_exception_handler(context)


def _fingerprint(path: str) -> tuple[object, ...]:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        digest = hashlib.blake2b(Path(real).read_bytes(), digest_size=16).digest()
    except OSError:
        return ("missing",)
    return real, st.st_ino, st.st_size, st.st_mtime_ns, digest


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return default
