"""Command line: parse arguments, hand over. No logic of its own.

::

    vantage-exporter [--config FILE] [--listen HOST:PORT] ...   run the daemon
    vantage-exporter check-config FILE                          exit 0 valid, 2 invalid
    vantage-exporter probe URL [--timeout 3s] [--config F --module M]
    vantage-exporter schema                                     JSON Schema of the config
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence

import uvloop

from exporter import __version__, logs
from exporter.config import (
    ConfigError,
    HTTPSettings,
    Target,
    check_url,
    json_schema,
    load_config,
    modules_by_name,
    parse_duration,
)
from exporter.daemon import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Daemon, Options
from exporter.outcome import EXPLANATIONS, PHASES, ProbeResult
from exporter.probes.http import HTTPProber
from exporter.sharding import Shard

SUBCOMMANDS = ("check-config", "probe", "schema")
DEFAULT_CONFIG = "vantage.yaml"


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_arg(text: str) -> tuple[str | None, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. :9469, 127.0.0.1:9469)")
    host = host.strip("[]")
    return (host or None), int(port)


def _shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vantage-exporter",
        description="Probe HTTP(S) targets on a schedule and export every outcome to Prometheus."
                    f" Subcommands: {', '.join(SUBCOMMANDS)} (see `vantage-exporter SUB -h`).")
    p.add_argument("--config", metavar="FILE",
                   help=f"config file (default ./{DEFAULT_CONFIG}; without one: demo mode)")
    p.add_argument("--listen", type=_listen_arg, default=(None, 9469), metavar="HOST:PORT",
                   help="address to serve /metrics on (default :9469)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="INDEX/COUNT",
                   help="probe only this shard's targets (env VANTAGE_SHARD)")
    p.add_argument("--config.watch", dest="watch", action="store_true",
                   help="reload when the config file changes (ConfigMap updates included)")
    p.add_argument("--web.enable-lifecycle", dest="lifecycle", action="store_true",
                   help="allow POST /-/reload")
    p.add_argument("--shutdown-grace", type=_duration_arg, default=5.0, metavar="DURATION",
                   help="how long in-flight probes may finish on shutdown (default 5s)")
    p.add_argument("--version", action="version", version=f"vantage-exporter {__version__}")
    return p


def run_daemon(argv: Sequence[str]) -> int:
    args = daemon_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        shard = args.shard or Shard.from_env(None)
    except ValueError as exc:
        print(f"vantage-exporter: VANTAGE_SHARD: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = args.config
    if config is None and os.path.exists(DEFAULT_CONFIG):
        config = DEFAULT_CONFIG
    host, port = args.listen
    options = Options(config_path=config, host=host, port=port, shard=shard, watch=args.watch,
                      lifecycle=args.lifecycle, shutdown_grace=args.shutdown_grace)

    async def main() -> int:
        return await Daemon(options).run()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def check_config(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="vantage-exporter check-config",
                                description="Validate a config file: exit 0 valid, 2 invalid.")
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        n = len(exc.problems)
        print(f"{args.file}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: valid, {len(config.targets)} targets, {len(config.modules)} modules")
    return EXIT_OK


def probe(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="vantage-exporter probe",
                                description="Probe a URL once and explain the outcome: exit 0 on "
                                            "success, 1 on any other outcome, 2 on bad usage.")
    p.add_argument("url")
    p.add_argument("--timeout", type=_duration_arg, default=3.0, metavar="DURATION")
    p.add_argument("--config", metavar="FILE", help="take the module from this config")
    p.add_argument("--module", default="http_2xx")
    args = p.parse_args(argv)
    settings = HTTPSettings()
    if args.config or args.module != "http_2xx":
        try:
            modules = modules_by_name(load_config(args.config)) if args.config else {}
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        if args.module not in modules and args.module != "http_2xx":
            print(f"vantage-exporter probe: unknown module {args.module!r}", file=sys.stderr)
            return EXIT_CONFIG
        if args.module in modules:
            settings = modules[args.module].http
    try:
        args.url = check_url(args.url)
    except ValueError as exc:
        print(f"vantage-exporter probe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    target = Target(args.url, args.url, args.module, args.timeout + 1, args.timeout, settings)

    async def once() -> ProbeResult:
        async with HTTPProber() as prober:
            await prober.prepare((target,))
            return await prober.probe(target)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(once())
    print(explain(target, result))
    return EXIT_OK if result.ok else EXIT_FAILURE


def explain(target: Target, result: ProbeResult) -> str:
    lines = [f"target:   {target.url}",
             f"outcome:  {result.outcome.value} ({EXPLANATIONS[result.outcome]})"]
    if result.detail:
        lines.append(f"error:    {result.detail}")
    lines.append(f"status:   {result.status_code or '-'}")
    lines.append(f"duration: {result.duration * 1000:.1f} ms")
    lines.append("phases:   " + ", ".join(
        f"{p} {result.phases.get(p, 0.0) * 1000:.1f} ms" for p in PHASES))
    if result.tls_cert_expiry:
        days = (result.tls_cert_expiry - time.time()) / 86400
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(result.tls_cert_expiry))
        lines.append(f"tls:      certificate expires {stamp} ({days:.0f} days)")
    return "\n".join(lines)


def schema(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vantage-exporter schema",
                                     description="Print the JSON Schema of the config file.")
    parser.parse_args(argv)
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "check-config":
            return check_config(argv[1:])
        if argv and argv[0] == "probe":
            return probe(argv[1:])
        if argv and argv[0] == "schema":
            return schema(argv[1:])
        return run_daemon(argv)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
