"""Logging: one line per event, as text (``key=value`` tail) or JSON.

Fields passed with ``extra={"target": ..., "outcome": ...}`` become JSON keys / text pairs, so
a 10,000-target instance can be filtered by target or outcome without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        tail = "".join(f" {k}={json.dumps(v, default=str)}" for k, v in _extras(record).items())
        # one event, one line: newlines (tracebacks) are escaped, not emitted
        msg = msg.replace("\n", "\\n")
        return f"{_timestamp(record)} {record.levelname:<7} {record.name}: {msg}{tail}"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {"ts": _timestamp(record), "level": record.levelname.lower(),
                                  "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        doc.update(_extras(record))
        return json.dumps(doc, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would be one line per scrape: not an event worth a line
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
