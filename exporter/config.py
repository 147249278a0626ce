"""YAML -> typed, validated, immutable :class:`Config`.

The file is parsed fully, validated fully (every problem reported together, each as
``FILE:LINE: path: message``), and only then turned into frozen dataclasses, so a caller either
gets a whole new config or a :class:`ConfigError` and keeps what it had::

    vantage.yaml:14: targets[2].timeout: 20s is not shorter than interval 15s

Only ``yaml.safe_load`` semantics are used; duplicate keys, unknown keys and wrong types are
errors. Secrets (``password_file``, ``bearer_token_file``) and ``${ENV}`` references in header
values are resolved at load time, so a reload picks up rotated secrets. Loading reads files:
call it off the event loop (the daemon uses a thread).
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, order=True)
class Problem:
    line: int
    path: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, in file order."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(dict.fromkeys(problems), key=lambda p: p.line)  # stable
        super().__init__("\n".join(p.render(source) for p in self.problems))


# ---------------------------------------------------------------------------------------------
# Value parsers (also used by the CLI for --timeout and --shutdown-grace)

_DURATION_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0,
                   "s": 1.0, "ms": 0.001}
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                          r"(?:(\d+)ms)?$")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE_RE = re.compile(r"^(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HEADER_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_RESERVED_LABELS = frozenset({"target", "url", "module", "outcome", "phase", "le", "instance",
                              "job"})
MAX_DURATION = 7 * 86400.0  # a week: anything longer is a typo, and keeps timer math sane


def parse_duration(text: str) -> float:
    """``"1m30s"`` -> 90.0. Prometheus duration syntax; raises ValueError with a usable message."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not m or not text.strip() or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 15s, 1m30s, 2h)")
    units = ("y", "w", "d", "h", "m", "s", "ms")
    return sum(int(g) * _DURATION_UNITS[u] for g, u in zip(m.groups(), units, strict=True) if g)


def format_duration(seconds: float) -> str:
    """90.0 -> ``"1m30s"``; the inverse of :func:`parse_duration` for whole milliseconds."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (use e.g. 65536, 64KiB, 1MiB)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    m = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a size (use e.g. 65536, 64KiB, 1MiB)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]


def parse_status_codes(value: object) -> tuple[int, int]:
    """``200`` | ``"2xx"`` | ``"200-299"`` -> inclusive range."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"[1-5]xx", value.strip().lower()):
        lo = int(value.strip()[0]) * 100
        hi = lo + 99
    elif isinstance(value, str) and re.fullmatch(r"\d{3}(-\d{3})?", value.strip()):
        a, _, b = value.strip().partition("-")
        lo, hi = int(a), int(b or a)
    else:
        raise ValueError(f"{value!r} is not a status code (use 200, \"2xx\" or \"200-299\")")
    if not (100 <= lo <= hi <= 599):
        raise ValueError(f"{value!r} is not a status code range within 100-599")
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Typed config


@dataclass(frozen=True)
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context for these settings (reads files: call off the event loop)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class HeaderMatch:
    header: str
    regexp: re.Pattern[str]


@dataclass(frozen=True)
class HTTPSettings:
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    valid_status_codes: tuple[tuple[int, int], ...] = ((200, 299),)
    follow_redirects: bool = True
    max_redirects: int = 10
    keepalive: bool = False
    max_body_bytes: int = 1024 * 1024
    fail_if_body_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_body_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_not_ssl: bool = False
    basic_auth: BasicAuth | None = None
    bearer_token: str | None = field(default=None, repr=False)
    tls: TLSConfig = field(default_factory=TLSConfig)

    def status_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.valid_status_codes)


@dataclass(frozen=True)
class Module:
    name: str
    kind: str
    http: HTTPSettings


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    module: str
    interval: float
    timeout: float
    http: HTTPSettings
    labels: tuple[tuple[str, str], ...] = ()
    line: int = field(default=0, compare=False)  # where it is defined, for messages


@dataclass(frozen=True)
class Config:
    interval: float = 15.0
    timeout: float = 5.0
    max_concurrency: int = 512
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    modules: tuple[Module, ...] = ()
    targets: tuple[Target, ...] = ()
    source: str = field(default="<none>", compare=False)


BUILTIN_MODULES: dict[str, Module] = {"http_2xx": Module("http_2xx", "http", HTTPSettings())}

# ---------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection


class _Map(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[Problem] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        line = knode.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            loader.problems.append(Problem(line, "", "a mapping key must be a plain value"))
            continue
        if key in m:
            loader.problems.append(
                Problem(line, "", f"duplicate key {key!r} (first at line {m.key_lines[key]})"))
            continue
        m[key] = loader.construct_object(vnode, deep=True)
        m.key_lines[key] = line
    return m


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [n.start_mark.line + 1 for n in node.value]
    return s


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects problems; every check returns a value or None and never raises."""

    def __init__(self, base_dir: Path) -> None:
        self.problems: list[Problem] = []
        self.base_dir = base_dir

    def add(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(line, path, message))

    def mapping(self, value: object, line: int, path: str, allowed: tuple[str, ...]) -> _Map | None:
        if value is None:
            empty = _Map()
            empty.line, empty.key_lines = line, {}
            return empty
        if not isinstance(value, _Map):
            self.add(line, path, f"must be a mapping, got {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
                self.add(value.key_lines.get(key, value.line), _join(path, str(key)),
                         f"unknown key{hint}")
        return value

    def field(self, m: _Map, key: str, path: str, conv: Callable[[Any], Any]) -> Any:
        """Convert m[key] with conv (which raises ValueError/TypeError with a message)."""
        line = m.key_lines.get(key, m.line)
        try:
            return conv(m[key])
        except (ValueError, TypeError, OverflowError) as exc:
            self.add(line, _join(path, key), str(exc))
            return None

    def read_secret(self, name: str) -> str:
        path = self.resolve_path(name)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text") from None

    def resolve_path(self, name: str) -> str:
        p = Path(os.path.expandvars(name))
        return str(p if p.is_absolute() else self.base_dir / p)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {_Map: "a mapping", _Seq: "a list", bool: "a boolean", int: "a number",
            float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)}")
    return value


def _nonempty_str(value: object) -> str:
    s = _str(value)
    if not s.strip():
        raise ValueError("must not be empty")
    return s


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_kind(value)}")
    return value


def _int_between(lo: int, hi: int) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo}..{hi}")
        return value
    return conv


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"must be a duration string like 15s or 1m30s, got {_kind(value)} "
                         f"{value!r}")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value} must be greater than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value} is longer than the maximum of 1w")
    return seconds


def _regexp(value: object) -> re.Pattern[str]:
    s = _str(value)
    try:
        return re.compile(s)
    except re.error as exc:
        raise ValueError(f"invalid regexp {s!r}: {exc}") from None
    except RecursionError:
        raise ValueError(f"regexp {s!r} is nested too deeply") from None


def _list_of(conv: Callable[[Any], Any]) -> Callable[[object], tuple[Any, ...]]:
    def each(value: object) -> tuple[Any, ...]:
        if not isinstance(value, _Seq):
            raise ValueError(f"must be a list, got {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(conv(item))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        return tuple(out)
    return each


def _buckets(value: object) -> tuple[float, ...]:
    if not isinstance(value, _Seq) or not value:
        raise ValueError("must be a non-empty list of numbers (seconds)")
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{v!r} is not a positive finite number of seconds")
        if out and v <= out[-1]:
            raise ValueError("must be strictly increasing")
        out.append(float(v))
    return tuple(out)


_HTTP_KEYS = ("method", "headers", "body", "valid_status_codes", "follow_redirects",
              "max_redirects", "keepalive", "max_body_bytes", "fail_if_body_matches_regexp",
              "fail_if_body_not_matches_regexp", "fail_if_header_matches", "fail_if_not_ssl",
              "basic_auth", "bearer_token_file", "tls")
_TLS_KEYS = ("insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name")


def _check_http(c: _Checker, value: object, line: int, path: str) -> dict[str, Any]:
    """Validate an ``http:`` mapping into a *partial* dict (only the keys present)."""
    m = c.mapping(value, line, path, _HTTP_KEYS)
    if m is None:
        return {}
    out: dict[str, Any] = {}

    def method(v: object) -> str:
        s = _str(v).upper()
        if s not in _METHODS:
            raise ValueError(f"{v!r} is not one of {', '.join(_METHODS)}")
        return s

    def headers(v: object) -> tuple[tuple[str, str], ...]:
        if v is None:
            return ()
        if not isinstance(v, _Map):
            raise ValueError(f"must be a mapping of header: value, got {_kind(v)}")
        pairs = []
        for k, val in v.items():
            if not isinstance(k, str) or not _HEADER_RE.match(k):
                raise ValueError(f"{k!r} is not a valid header name")
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                raise ValueError(f"header {k}: value must be a string")
            pairs.append((k, _header_value(_expand_env(str(val), f"header {k}"),
                                           f"header {k}")))
        return tuple(pairs)

    def header_matches(v: object) -> tuple[HeaderMatch, ...]:
        if not isinstance(v, _Seq):
            raise ValueError(f"must be a list of {{header: X, regexp: Y}}, got {_kind(v)}")
        out_: list[HeaderMatch] = []
        for i, item in enumerate(v):
            if not isinstance(item, _Map) or set(item) != {"header", "regexp"}:
                raise ValueError(f"item {i}: must be a mapping with exactly header and regexp")
            out_.append(HeaderMatch(_nonempty_str(item["header"]).lower(), _regexp(item["regexp"])))
        return tuple(out_)

    def body(v: object) -> str | None:
        return None if v is None else _str(v)

    simple: dict[str, Callable[[Any], Any]] = {
        "method": method,
        "headers": headers,
        "body": body,
        "valid_status_codes": _valid_codes,
        "follow_redirects": _bool,
        "max_redirects": _int_between(0, 100),
        "keepalive": _bool,
        "max_body_bytes": _body_size,
        "fail_if_body_matches_regexp": _list_of(_regexp),
        "fail_if_body_not_matches_regexp": _list_of(_regexp),
        "fail_if_header_matches": header_matches,
        "fail_if_not_ssl": _bool,
        "bearer_token_file": lambda v: _header_value(c.read_secret(_nonempty_str(v)),
                                                     "bearer token"),
    }
    for key, conv in simple.items():
        if key in m:
            parsed = c.field(m, key, path, conv)
            if parsed is not None or key == "body":
                out["bearer_token" if key == "bearer_token_file" else key] = parsed
    if "basic_auth" in m:
        bpath = _join(path, "basic_auth")
        b = c.mapping(m["basic_auth"], m.key_lines["basic_auth"], bpath,
                      ("username", "password_file"))
        if b is not None:
            if "username" not in b:
                c.add(b.line, bpath, "username is required")
            user = c.field(b, "username", bpath, _str) if "username" in b else None
            password = (c.field(b, "password_file", bpath, lambda v: c.read_secret(_str(v)))
                        if "password_file" in b else "")
            if user is not None and password is not None:
                out["basic_auth"] = BasicAuth(user, password)
    if "tls" in m:
        tpath = _join(path, "tls")
        t = c.mapping(m["tls"], m.key_lines["tls"], tpath, _TLS_KEYS)
        tls: dict[str, Any] = {}
        if t is not None:
            for key in _TLS_KEYS:
                if key not in t:
                    continue
                if key == "insecure_skip_verify":
                    tls[key] = c.field(t, key, tpath, _bool)
                elif key == "server_name":
                    tls[key] = c.field(t, key, tpath, _opt_str)
                else:
                    tls[key] = c.field(t, key, tpath, lambda v: _file(c, v))
        out["tls"] = {k: v for k, v in tls.items() if v is not None or k == "server_name"}
        out["_tls_line"] = m.key_lines["tls"]
    return out


def _valid_codes(v: object) -> tuple[tuple[int, int], ...]:
    codes = _list_of(parse_status_codes)(v)
    if not codes:
        raise ValueError("must list at least one status code")
    return codes


def _body_size(v: object) -> int:
    n = parse_size(v)
    if n < 1:
        raise ValueError("must be at least 1 byte")
    return n


def _file(c: _Checker, v: object) -> str | None:
    if v is None:
        return None
    path = c.resolve_path(_nonempty_str(v))
    if not os.path.isfile(path):
        raise ValueError(f"file {path} does not exist")
    return path


def _header_value(value: str, what: str) -> str:
    """A value that goes into a request header verbatim: a line break would end the header
    and let the rest be read as more headers (header injection)."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what}: value contains a line break or NUL character")
    return value


def _expand_env(text: str, what: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"{what}: environment variable {name} is not set")
        return os.environ[name]
    return _ENV_RE.sub(sub, text)


def _merge_http(c: _Checker, base: HTTPSettings, partial: dict[str, Any], line: int,
                path: str) -> HTTPSettings | None:
    fields = {k: v for k, v in partial.items() if not k.startswith("_")}
    tls_partial = fields.pop("tls", None)
    settings = replace(base, **fields)
    if tls_partial:
        settings = replace(settings, tls=replace(settings.tls, **tls_partial))
    tls = settings.tls
    tls_line = partial.get("_tls_line", line)
    if tls.key_file and not tls.cert_file:
        c.add(tls_line, _join(path, "tls"), "key_file needs cert_file")
        return None
    if tls.ca_file or tls.cert_file:
        try:
            tls.ssl_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            c.add(tls_line, _join(path, "tls"), f"cannot load certificates: {exc}")
            return None
    return settings


def check_url(value: object) -> str:
    """The URL of a target, stripped; ValueError with the reason if it cannot be probed."""
    s = _nonempty_str(value).strip()
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{s!r} must start with http:// or https://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"{s!r} is not a valid URL: {exc}") from None
    if not host:
        raise ValueError(f"{s!r} has no host")
    del port
    if any(ch.isspace() for ch in s):
        raise ValueError(f"{s!r} contains whitespace")
    return s


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, _Map):
        raise ValueError(f"must be a mapping of name: value, got {_kind(value)}")
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not _LABEL_RE.match(k) or k.startswith("__"):
            raise ValueError(f"{k!r} is not a valid Prometheus label name")
        if k in _RESERVED_LABELS:
            raise ValueError(f"label {k!r} is reserved by the exporter or Prometheus")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError(f"label {k}: value must be a string")
        out.append((k, str(v)))
    return tuple(sorted(out))


def _parse(text: str, source: str, base_dir: Path) -> Config:
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(source, [Problem(mark.line + 1 if mark else 0, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [Problem(0, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(source, [Problem(0, "", "the document is nested too deeply")]) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # safe_load's own constructors (e.g. a timestamp like 2024-13-45) raise these
        raise ConfigError(source, [Problem(0, "", f"invalid YAML value: {exc}")]) from None
    finally:
        loader.dispose()
    c = _Checker(base_dir)
    c.problems.extend(loader.problems)
    if doc is None:
        doc = _Map()
        doc.line, doc.key_lines = 1, {}
    root = c.mapping(doc, 1, "", ("global", "modules", "targets"))
    if root is None:
        raise ConfigError(source, c.problems)

    # global
    g = c.mapping(root.get("global"), root.key_lines.get("global", 1), "global",
                  ("interval", "timeout", "max_concurrency", "buckets"))
    defaults = Config()
    interval, timeout = defaults.interval, defaults.timeout
    max_conc, buckets = defaults.max_concurrency, defaults.buckets
    if g is not None:
        if "interval" in g:
            interval = c.field(g, "interval", "global", _duration) or interval
        if "timeout" in g:
            timeout = c.field(g, "timeout", "global", _duration) or timeout
        if "max_concurrency" in g:
            max_conc = c.field(g, "max_concurrency", "global", _int_between(1, 100_000)) or max_conc
        if "buckets" in g:
            buckets = c.field(g, "buckets", "global", _buckets) or buckets

    # modules
    modules: dict[str, Module] = dict(BUILTIN_MODULES)
    broken: set[object] = set()  # modules with problems: targets using them say nothing more
    mods = root.get("modules")
    if mods is not None and not isinstance(mods, _Map):
        c.add(root.key_lines.get("modules", 1), "modules",
              f"must be a mapping of module name: settings, got {_kind(mods)}")
        mods = None
    if mods is not None:
        for name, body in mods.items():
            mpath = _join("modules", str(name))
            mline = mods.key_lines.get(name, mods.line)
            if not isinstance(name, str) or not _LABEL_RE.match(name):
                c.add(mline, mpath, "a module name must be letters, digits and _")
                broken.add(name)
                continue
            mm = c.mapping(body, mline, mpath, ("kind", "http"))
            if mm is None:
                broken.add(name)
                continue
            kind = "http"
            if "kind" in mm:
                kind = c.field(mm, "kind", mpath, _str) or "http"
                if kind != "http":
                    c.add(mm.key_lines["kind"], _join(mpath, "kind"),
                          f"{kind!r} is not a supported kind (supported: http)")
                    broken.add(name)
                    continue
            partial = _check_http(c, mm.get("http"), mm.key_lines.get("http", mline),
                                  _join(mpath, "http"))
            settings = _merge_http(c, HTTPSettings(), partial, mline, _join(mpath, "http"))
            if settings is not None:
                modules[name] = Module(name, kind, settings)
            else:
                broken.add(name)

    # targets
    targets: list[Target] = []
    seen: dict[str, int] = {}
    raw_targets = root.get("targets")
    tline = root.key_lines.get("targets", 1)
    if raw_targets is not None and not isinstance(raw_targets, _Seq):
        c.add(tline, "targets", f"must be a list, got {_kind(raw_targets)}")
        raw_targets = None
    for i, item in enumerate(raw_targets or ()):
        path = f"targets[{i}]"
        line = raw_targets.item_lines[i] if isinstance(raw_targets, _Seq) else tline
        t = c.mapping(item, line, path, ("name", "url", "module", "interval", "timeout", "http",
                                         "labels"))
        if t is None:
            continue
        line = t.line
        if "url" not in t:
            c.add(line, path, "url is required")
            continue
        url = c.field(t, "url", path, check_url)
        name = c.field(t, "name", path, _nonempty_str) if "name" in t else url
        mod_name = c.field(t, "module", path, _str) if "module" in t else "http_2xx"
        t_interval = c.field(t, "interval", path, _duration) if "interval" in t else interval
        t_timeout = c.field(t, "timeout", path, _duration) if "timeout" in t else timeout
        labels = c.field(t, "labels", path, _labels) if "labels" in t else ()
        partial = _check_http(c, t.get("http"), t.key_lines.get("http", line), _join(path, "http"))
        if name is not None:
            if name in seen:
                c.add(t.key_lines.get("name", line), _join(path, "name"),
                      f"duplicate target name {name!r} (first at line {seen[name]})")
                continue
            seen[name] = line
        if None in (url, name, mod_name, t_interval, t_timeout, labels) or mod_name in broken:
            continue
        if mod_name not in modules:
            known = ", ".join(sorted(modules))
            c.add(t.key_lines.get("module", line), _join(path, "module"),
                  f"unknown module {mod_name!r} (known: {known})")
            continue
        if t_timeout >= t_interval:
            c.add(t.key_lines.get("timeout", line), _join(path, "timeout"),
                  f"{format_duration(t_timeout)} is not shorter than interval "
                  f"{format_duration(t_interval)}")
            continue
        settings = _merge_http(c, modules[mod_name].http, partial, line, _join(path, "http"))
        if settings is None:
            continue
        targets.append(Target(name, url, mod_name, t_interval, t_timeout, settings, labels, line))

    if c.problems:
        raise ConfigError(source, c.problems)
    return Config(interval, timeout, max_conc, buckets, tuple(modules.values()), tuple(targets),
                  source)


def load_config_text(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse and validate YAML text. Raises :class:`ConfigError` and nothing else."""
    try:
        return _parse(text, source, base_dir or Path.cwd())
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(source, [Problem(0, "", "the document is nested too deeply")]) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file (blocking: run it in a thread from async code)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), [Problem(0, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [Problem(0, "", f"not UTF-8 text: {exc}")]) from None
    return load_config_text(text, str(p), p.resolve().parent)


# ---------------------------------------------------------------------------------------------
# JSON Schema (for editors: `vantage-exporter schema`)

_DURATION_SCHEMA = {"type": "string", "pattern": _DURATION_RE.pattern,
                    "description": "Prometheus duration: 500ms, 15s, 1m30s, 2h"}


def json_schema() -> dict[str, Any]:
    status = {"oneOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                        {"type": "string", "pattern": r"^([1-5]xx|\d{3}(-\d{3})?)$"}]}
    regexps = {"type": "array", "items": {"type": "string"}}
    file_ = {"type": ["string", "null"]}
    tls = {"type": "object", "additionalProperties": False, "properties": {
        "insecure_skip_verify": {"type": "boolean"}, "ca_file": file_, "cert_file": file_,
        "key_file": file_, "server_name": {"type": ["string", "null"]}}}
    http = {"type": "object", "additionalProperties": False, "properties": {
        "method": {"enum": list(_METHODS)},
        "headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                    "description": "values may reference ${ENV_VAR}"},
        "body": {"type": ["string", "null"]},
        "valid_status_codes": {"type": "array", "items": status, "minItems": 1},
        "follow_redirects": {"type": "boolean"},
        "max_redirects": {"type": "integer", "minimum": 0, "maximum": 100},
        "keepalive": {"type": "boolean"},
        "max_body_bytes": {"oneOf": [{"type": "integer", "minimum": 1},
                                     {"type": "string", "pattern": _SIZE_RE.pattern}]},
        "fail_if_body_matches_regexp": regexps,
        "fail_if_body_not_matches_regexp": regexps,
        "fail_if_header_matches": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["header", "regexp"],
            "properties": {"header": {"type": "string"}, "regexp": {"type": "string"}}}},
        "fail_if_not_ssl": {"type": "boolean"},
        "basic_auth": {"type": "object", "additionalProperties": False, "required": ["username"],
                       "properties": {"username": {"type": "string"},
                                      "password_file": {"type": "string"}}},
        "bearer_token_file": {"type": "string"},
        "tls": tls}}
    label_map = {"type": ["object", "null"], "propertyNames": {"pattern": _LABEL_RE.pattern},
                 "additionalProperties": {"type": ["string", "number"]}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vantage-exporter configuration",
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            "global": {"type": ["object", "null"], "additionalProperties": False, "properties": {
                "interval": _DURATION_SCHEMA, "timeout": _DURATION_SCHEMA,
                "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 100000},
                "buckets": {"type": "array", "minItems": 1,
                            "items": {"type": "number", "exclusiveMinimum": 0}}}},
            "modules": {"type": ["object", "null"], "propertyNames": {"pattern": _LABEL_RE.pattern},
                        "additionalProperties": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"kind": {"const": "http"}, "http": http}}},
            "targets": {"type": ["array", "null"], "items": {
                "type": "object", "additionalProperties": False, "required": ["url"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "module": {"type": "string"},
                    "interval": _DURATION_SCHEMA, "timeout": _DURATION_SCHEMA,
                    "http": http, "labels": label_map}}},
        },
    }


def modules_by_name(config: Config) -> Mapping[str, Module]:
    return {m.name: m for m in config.modules}
