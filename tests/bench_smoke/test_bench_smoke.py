"""The benchmarks in bench/ still run: each one's --smoke mode, as a subprocess.

No thresholds (wall-clock figures are never asserted in tests, DESIGN.md "Performance"): only
that each exits 0 and prints its figure lines, so the benchmarks cannot rot unnoticed. Skipped
when the tools they drive are not installed (Debian: nginx-light, wrk,
prometheus-blackbox-exporter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _needs(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _run(script: str, timeout: float) -> str:
    # The exporter under test must be the one of this checkout, whatever is installed.
    env = dict(os.environ)
    root = str(BENCH.parent)
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    proc = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_probe_cost_smoke() -> None:
    _needs("nginx", "wrk", "prometheus-blackbox-exporter")
    out = _run("probe_cost.py", timeout=120)
    for name in ("blackbox", "vantage", "bare-uvloop", "bare-asyncio"):
        assert f"  {name} " in out, out
    for figure in ("probes/CPU-s", "vantage/blackbox", "vantage/bare-uvloop",
                   "uvloop/asyncio (bare)"):
        assert figure in out, out


def test_scale_smoke() -> None:
    _needs("nginx")
    out = _run("scale.py", timeout=120)
    for figure in ("scheduler lag, exporter's histogram", "scheduler lag, independent",
                   "event loop from outside", "RSS:", "/metrics text ", "/metrics text+gzip",
                   "largest lag while a scrape is served"):
        assert figure in out, out
