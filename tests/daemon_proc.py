"""Run the real daemon as a process (``python -m exporter``) and talk to it over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

import aiohttp

from tests.helpers import samples

#: Lines that must never appear in a daemon's log (asyncio/aiohttp hygiene).
BAD_LOG_LINES = ("Task was destroyed but it is pending", "Unclosed client session",
                 "Unclosed connector", "ResourceWarning", "Traceback", "was never awaited",
                 "Exception ignored")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    def __init__(self, workdir: Path, config: str | None, *flags: str,
                 env: dict[str, str] | None = None, dev_mode: bool = True) -> None:
        # -X dev: asyncio debug mode and ResourceWarnings shown (hygiene checks); the soak
        # test turns it off because its debug allocator and tracebacks distort RSS figures.
        self.python_flags = ["-X", "dev"] if dev_mode else ["-W", "always::ResourceWarning"]
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "vantage.yaml" if config is not None else None
        if config is not None:
            assert self.config_path is not None
            self.config_path.write_text(config)
        self.flags = flags
        self.env = {**os.environ, "PYTHONWARNINGS": "error::ResourceWarning", **(env or {})}
        self.log_path = workdir / f"daemon-{self.port}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> DaemonProcess:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self, wait_ready: bool = True) -> None:
        args = [sys.executable, *self.python_flags, "-m", "exporter", "--listen",
                f"127.0.0.1:{self.port}", "--log-level", "debug"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        args += list(self.flags)
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *args, cwd=self.workdir, env=self.env, stdout=self._log, stderr=self._log,
            stdin=asyncio.subprocess.DEVNULL)
        self.session = aiohttp.ClientSession()
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = await self.get("/-/ready")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")

    async def get(self, path: str, **kw: object) -> tuple[int, str]:
        assert self.session is not None
        async with self.session.get(self.url + path, **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.text()

    async def post(self, path: str) -> tuple[int, str]:
        assert self.session is not None
        async with self.session.post(self.url + path) as r:
            return r.status, await r.text()

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return samples(text)

    async def value(self, name: str, **labels: str) -> float | None:
        return (await self.metrics()).get((name, frozenset(labels.items())))

    async def wait_for(self, name: str, predicate: object, timeout: float = 15,
                       **labels: str) -> float | None:
        """Poll until the sample satisfies predicate (a callable on the value or None)."""
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            v = await self.value(name, **labels)
            if predicate(v):  # type: ignore[operator]
                return v
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name}{labels} stayed {v!r}\n{self.log()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_clean_log(self, allow: tuple[str, ...] = ()) -> None:
        text = self.log()
        for bad in BAD_LOG_LINES:
            if bad in allow:
                continue
            assert bad not in text, f"{bad!r} in daemon log:\n{text[-4000:]}"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
