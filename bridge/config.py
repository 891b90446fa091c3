"""Typed configuration: TOML in, frozen objects out, validated once with key paths in errors.

Nothing else in the bridge reads TOML or the environment. See config/pbx-bridge.example.toml for
every key with its meaning.

A source's auth types live in :mod:`bridge.config_auth`, its realtime subscription in
:mod:`bridge.config_realtime`; both are re-exported here: import all config from this module.
:func:`from_dict` reports every problem of a document at once: the document is checked table by
table and entry by entry (:mod:`bridge.config_walk`), then the rules types cannot say run on
every part that converted. :mod:`bridge.config_show` prints a config back, secrets masked.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import msgspec

from bridge import config_walk as walk
from bridge import redact
from bridge.config_auth import Auth as Auth
from bridge.config_auth import AuthBasic as AuthBasic
from bridge.config_auth import AuthDigest as AuthDigest
from bridge.config_auth import AuthNone as AuthNone
from bridge.config_auth import AuthToken as AuthToken
from bridge.config_auth import AuthWebkey as AuthWebkey
from bridge.config_auth import vendor_auth_problem
from bridge.config_commands import Provisioning as Provisioning
from bridge.config_commands import SourceApi as SourceApi
from bridge.config_commands import api_problems
from bridge.config_realtime import RealtimeConfig as RealtimeConfig
from bridge.config_realtime import realtime_problems
from bridge.errors import ConfigError
from bridge.events import TYPES

IMPLEMENTED_VENDORS = ("coocenter", "coral", "oncall", "callog")

_Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        # What a wrong name is told it must be (bridge.config_walk.describe).
        description="a name of lower-case letters, digits, '-' and '_' (a letter or digit"
        " first, at most 63 characters)",
    ),
]
_Positive = Annotated[int, msgspec.Meta(gt=0)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]


QUARANTINE_MAX_ENTRIES = 10_000
QUARANTINE_MAX_BYTES = 64 << 20


class SourceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: _Name
    vendor: str
    timezone: str = "UTC"
    auth: Auth = AuthNone()
    allow_ips: tuple[str, ...] = ()
    extension_max_digits: Annotated[int, msgspec.Meta(ge=1, le=12)] = 5
    # The numbers callers dial to reach this PBX, and the hosts (IP or name) of its trunks:
    # evidence of a call's direction where the vendor gives none.
    dids: tuple[str, ...] = ()
    trunk_hosts: tuple[str, ...] = ()
    # How long after an unanswered inbound call ends, with no authoritative record yet, the
    # bridge waits for contrary evidence (a late answer) before it says call.missed. 0: at once.
    missed_settle_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 10.0
    # Where the PBX serves recordings, for vendors that report a path (CooCenter: the base of
    # /coocenter-api/monitor/); the recording's path stays in data.recording_path.
    recording_base_url: str | None = None
    # Caps on this source's held quarantine entries (their count, their bodies' bytes): past
    # either, a payload that cannot be read is answered 503 and not kept, so a flood of bad
    # pushes cannot fill the disk.
    quarantine_max_entries: _Positive = QUARANTINE_MAX_ENTRIES
    quarantine_max_bytes: _Positive = QUARANTINE_MAX_BYTES
    realtime: RealtimeConfig | None = None
    api: SourceApi | None = None  # the PBX's own API: commands, queries, gap repair
    provisioning: Provisioning | None = None  # a Call Control Manager for extension.provision

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.allow_ips)


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8480"
    max_body_bytes: _Positive = 1 << 20
    # Slow clients (bridge/server.py): a request head must arrive within header_timeout_s of
    # connecting (or of its first byte, on a kept-alive connection) or the connection closes; a
    # body within body_timeout_s of its head or it is answered 408; an idle kept-alive
    # connection closes after keepalive_timeout_s. Past max_connections, new ones get 503.
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    keepalive_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    max_connections: _Positive = 1000

    @property
    def host(self) -> str:
        return split_listen(self.listen, "server.listen")[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen, "server.listen")[1]


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./var"
    synchronous: Literal["full", "normal"] = "full"
    retention_days: Annotated[float, msgspec.Meta(gt=0)] | None = 30.0
    calls_ttl_hours: Annotated[float, msgspec.Meta(gt=0)] = 24.0
    max_batch: _Positive = 512
    linger_ms: _NonNegative = 0.0
    max_pending: _Positive = 20_000

    @property
    def path(self) -> Path:
        return Path(self.data_dir) / "outbox.sqlite3"


Scope = Literal["read", "command", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "command", "admin")
_Token = Annotated[str, msgspec.Meta(min_length=16)]


class ApiToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token with chosen scopes: ``read`` (events, streams, calls, sinks and sources lists),
    ``command`` (commands to the PBXs), ``admin`` (quarantine, dead letters, replay, reload; it
    implies the other two)."""

    token: _Token
    scopes: Annotated[tuple[Scope, ...], msgspec.Meta(min_length=1)] = ("read",)
    name: str | None = None  # shown in logs instead of the token


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Each a plain string (every scope) or a table { token = "...", scopes = ["read"] }.
    tokens: tuple[_Token | ApiToken, ...] = ()
    client_queue: _Positive = 1024
    page_limit_max: _Positive = 1000

    @property
    def grants(self) -> tuple[ApiToken, ...]:
        """Every token as an :class:`ApiToken`, a plain string holding every scope."""
        return tuple(
            ApiToken(token=token, scopes=SCOPES) if isinstance(token, str) else token
            for token in self.tokens
        )


class LoggingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


SinkStart = Literal["oldest", "now"]

DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    36000.0,
)


class WebhookSinkConfig(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="webhook",
    tag_field="type",
):
    """Signed, retrying HTTP delivery of matching events (Standard Webhooks)."""

    name: _Name
    url: str
    # whsec_... secrets; two at once while rotating (receivers accept either signature).
    secrets: Annotated[tuple[str, ...], msgspec.Meta(min_length=1, max_length=2)]
    types: tuple[str, ...] = ()  # type patterns (call.*); empty: every type
    # Where a sink seen for the first time starts: "oldest" (the retained history) or "now"
    # (only events committed from then on). Once it has a cursor, it resumes from that.
    start: SinkStart = "oldest"
    sources: tuple[str, ...] = ()  # source names; empty: every source
    headers: dict[str, str] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    retry_schedule_s: Annotated[
        tuple[Annotated[float, msgspec.Meta(ge=0)], ...], msgspec.Meta(min_length=1)
    ] = DEFAULT_RETRY_SCHEDULE_S
    # Per-type maximum age (s): an older event is marked expired instead of delivered.
    expire_s: dict[str, Annotated[float, msgspec.Meta(gt=0)]] = {}
    max_in_memory: Annotated[int, msgspec.Meta(ge=16)] = 2000
    # 1: one event per request (its id is the webhook-id). N > 1: a JSON array of up to N
    # events per request, at most one per call (so per-call order holds).
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    # Circuit breaker: this many failures in a row stop delivery for the cool-down, then one
    # probe decides (the cool-down doubles after each failed probe, up to ten times as long).
    breaker_threshold: Annotated[int, msgspec.Meta(ge=1)] = 5
    breaker_cool_down_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class NatsSinkConfig(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="nats",
    tag_field="type",
):
    """Publish matching events to a NATS JetStream stream (optional extra ``pbx-bridge[nats]``)."""

    name: _Name
    servers: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("nats://127.0.0.1:4222",)
    stream: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "PBX"
    # Subjects are <prefix>.<vendor>.<type>: plain tokens only, no wildcards.
    subject_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = (
        "pbx"
    )
    create_stream: bool = True  # create the stream (subjects <prefix>.>) when it is missing
    types: tuple[str, ...] = ()
    start: SinkStart = "oldest"  # as for webhook sinks
    sources: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None
    token: str | None = None
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    ack_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    reconnect_min_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


SinkConfig = WebhookSinkConfig | NatsSinkConfig


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()

    def source(self, name: str) -> SourceConfig | None:
        for source in self.sources:
            if source.name == name:
                return source
        return None


def split_listen(value: str, path: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(path, f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    if not host:
        raise ConfigError(path, f"missing host in {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Event-type filters (sinks' types and expire_s keys, bridge.events.type_matches): '*', a type,
# or a family such as 'call.*'.
_FAMILIES = tuple(sorted({kind.partition(".")[0] + ".*" for kind in TYPES}))
_PATTERNS = ("*", *_FAMILIES, *sorted(TYPES))
NATS_INSTALL = "pip install 'pbx-bridge[nats]'"


def _expand(value: Any, at: walk.At, out: walk.Problems) -> Any:
    """Replace ``${NAME}`` in every string with the environment variable's value.

    Every unset variable is reported; the value stays as written and is not checked further.
    """
    out.seen(at)
    if isinstance(value, str):
        unset = [name for name in _ENV.findall(value) if name not in os.environ]
        for name in unset:
            out.add(at, f"environment variable {name} is not set")
        if unset:
            out.mute(at)
            return value
        return _ENV.sub(lambda match: os.environ[match.group(1)], value)
    if isinstance(value, dict):
        return {key: _expand(item, at / key, out) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_expand(item, at.item(index, item), out) for index, item in enumerate(value)]
    return value


def _path_of(message: str) -> tuple[str, str]:
    """msgspec says ``... - at `$.sources[0].auth```: split that into (path, problem)."""
    problem, sep, where = message.rpartition(" - at `")
    if not sep:
        return "", message
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    return path, problem[0].lower() + problem[1:]


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a :class:`Config`.

    Raises one :class:`ConfigError` carrying every problem found (``problems``).
    """
    out = walk.Problems()
    document = _expand(raw, walk.ROOT, out)
    parts: dict[str, Any] = {}
    elements: dict[str, list[tuple[walk.At, Any]]] = {}
    if not isinstance(document, dict):
        out.add(walk.ROOT, f"expected a table, got {walk.show(document)}")
    else:
        walk.check_keys(Config, document, walk.ROOT, out)
        for field in walk.struct_fields(Config):
            key = field.encode_name
            if key in ("sources", "sinks"):  # entry by entry: one bad entry hides no other
                elements[key] = _elements(field.type, document.get(key, []), walk.ROOT / key, out)
            elif key in document:
                parts[key] = walk.convert(field.type, document[key], walk.ROOT / key, out)
            else:
                parts[key] = walk.default_of(field)
        _check(parts, elements, document, out)
    if len(out):
        raise out.error()
    try:
        return msgspec.convert(document, Config)
    except msgspec.ValidationError as exc:  # a rule the walk does not know: msgspec's words
        path, problem = _path_of(str(exc))
        raise ConfigError(path, problem) from None


def _elements(tp: Any, raw: Any, at: walk.At, out: walk.Problems) -> list[tuple[walk.At, Any]]:
    """The entries of an array of tables, each with its place: the valid ones, and what can be
    salvaged of the others (see :func:`bridge.config_walk.salvage`)."""
    if not isinstance(raw, list | tuple):  # tuple: from msgspec.to_builtins (override)
        out.add(at, f"expected a list of tables ([[{at.key}]]), got {walk.show(raw)}")
        return []
    valid = []
    for index, item in enumerate(raw):
        item_at = at.item(index, item)
        value = walk.convert(walk.element_type(tp), item, item_at, out)
        if value is walk.FAILED:  # still check the rest of the entry
            value = walk.salvage(walk.element_type(tp), item, item_at, out)
        if value is not None:
            valid.append((item_at, value))
    return valid


def _check(
    parts: dict[str, Any],
    elements: dict[str, list[tuple[walk.At, Any]]],
    document: dict[str, Any],
    out: walk.Problems,
) -> None:
    """Rules that types alone cannot say, on every part that converted."""
    server, api = parts["server"], parts["api"]
    public: bool | None = None  # unknown while the listener is wrong
    if server is not walk.FAILED:
        try:
            public = not is_loopback(split_listen(server.listen, "server.listen")[0])
        except ConfigError as exc:
            out.add(walk.ROOT / "server" / "listen", exc.problem)
    if public and api is not walk.FAILED and not api.tokens:
        out.add(
            walk.ROOT / "api" / "tokens",
            f"listening on non-loopback {server.listen} requires at least one API token",
        )
    sources = elements["sources"]
    for at, source in sources:
        _check_source(source, at, out, public=public)
    _check_unique(sources, out, "source")
    # Names of every entry, valid or not: a typo elsewhere in a source hides no sink's reference.
    raw_sources = document.get("sources")
    names = [
        item["name"]
        for item in (raw_sources if isinstance(raw_sources, list | tuple) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]
    sinks = elements["sinks"]
    for at, sink in sinks:
        _check_sink(sink, at, out, names)
    _check_unique(sinks, out, "sink")


def _check_unique(entries: list[tuple[walk.At, Any]], out: walk.Problems, kind: str) -> None:
    first: dict[str, walk.At] = {}
    for at, entry in entries:
        if entry.name in first:
            out.add(
                at / "name", f"duplicate {kind} name {entry.name!r} (also {first[entry.name].key})"
            )
        first.setdefault(entry.name, at)


def _check_url(value: str, at: walk.At, out: walk.Problems) -> None:
    if not value.startswith(("http://", "https://")):
        out.add(at, f"expected an http:// or https:// URL, got {redact.url(value)!r}")


def _check_source(
    source: SourceConfig, at: walk.At, out: walk.Problems, *, public: bool | None
) -> None:
    if source.vendor not in IMPLEMENTED_VENDORS:
        hint = walk.did_you_mean(source.vendor, IMPLEMENTED_VENDORS)
        out.add(
            at / "vendor",
            f"expected {walk.one_of(IMPLEMENTED_VENDORS)}, got {source.vendor!r}{hint}",
        )
    else:
        problem = vendor_auth_problem(source.vendor, source.auth)
        if problem is not None:
            out.add(at / "auth" / "type", problem)
        if source.realtime is not None:
            for key, text in realtime_problems(source.realtime, source.vendor):
                realtime_at = at / "realtime"
                out.add(realtime_at / key if key else realtime_at, text)
        if source.api is not None:
            for key, text in api_problems(source.api, source.vendor):
                api_at = at / "api"
                out.add(api_at / key if key else api_at, text)
    if source.provisioning is not None:
        _check_url(source.provisioning.url, at / "provisioning" / "url", out)
    try:
        ZoneInfo(source.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        hint = walk.did_you_mean(source.timezone, available_timezones())
        out.add(at / "timezone", f"unknown time zone {source.timezone!r}{hint}")
    if source.recording_base_url is not None:
        _check_url(source.recording_base_url, at / "recording_base_url", out)
    for index, net in enumerate(source.allow_ips):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            out.add(_index(at / "allow_ips", index), f"not an IP address or network: {net!r}")
    if isinstance(source.auth, AuthNone) and not source.allow_ips and public:
        out.add(
            at / "auth",
            "a source with auth type 'none' on a non-loopback listener needs allow_ips",
        )


def pattern_problem(pattern: str) -> str | None:
    """Why an event-type filter (``call.*``) can match no event type, or None."""
    if pattern == "*" or pattern in TYPES:
        return None
    if pattern.endswith(".*") and any(kind.startswith(pattern[:-1]) for kind in TYPES):
        return None
    hint = walk.did_you_mean(pattern, _PATTERNS) or (
        "; expected '*', an event type, or a family: " + ", ".join(_FAMILIES)
    )
    return f"{pattern!r} matches no event type{hint}"


def _check_sink(sink: SinkConfig, at: walk.At, out: walk.Problems, sources: list[str]) -> None:
    for index, pattern in enumerate(sink.types):
        problem = pattern_problem(pattern)
        if problem is not None:
            out.add(_index(at / "types", index), problem)
    for index, name in enumerate(sink.sources):
        if name not in sources:
            known = "; the sources are " + ", ".join(map(repr, sources))
            hint = walk.did_you_mean(name, sources) or (known if sources else "; there are none")
            out.add(_index(at / "sources", index), f"no source is named {name!r}{hint}")
    if isinstance(sink, NatsSinkConfig):
        try:
            importlib.import_module("nats")
        except ImportError:
            out.add(
                at / "type",
                f"a nats sink needs the optional NATS client: {NATS_INSTALL}",
            )
        if sink.reconnect_max_s < sink.reconnect_min_s:
            out.add(at / "reconnect_max_s", "must not be less than reconnect_min_s")
        return
    from bridge.sinks.signing import parse_secret  # the one place that knows the format

    _check_url(sink.url, at / "url", out)
    for index, secret in enumerate(sink.secrets):
        try:
            parse_secret(secret)
        except ValueError as exc:
            out.add(_index(at / "secrets", index), str(exc))
    for pattern in sink.expire_s:
        problem = pattern_problem(pattern)
        if problem is not None:
            out.add(at / "expire_s" / pattern, problem)


def _index(at: walk.At, index: int) -> walk.At:
    return at.item(index, None)


def load(path: str | Path | None) -> Config:
    """The config from a TOML file, or the embedded default when ``path`` is None."""
    if path is None:
        return default()
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: invalid TOML: {exc}") from None
    return from_dict(raw)


# Where the embedded default's sources reach their PBX's API: the loopback ports and made-up
# credentials `pbx-bridge simulate <vendor>-api` uses by default, so a newcomer's click-to-call
# reaches a simulated PBX with no config at all.
SIMULATED_APIS: Final[dict[str, dict[str, Any]]] = {
    "coocenter": {"url": "http://127.0.0.1:8091"},
    "coral": {"url": "http://127.0.0.1:8092", "api_key": "dev-coral-key"},
    "oncall": {
        "url": "http://127.0.0.1:8093",
        "username": "dev-tenant",
        "password": "dev-password",
        "domain": "sim-tenant.invalid",
        "call_extension": "101",
        "call_password": "dev-web-password",
    },
    "callog": {
        "url": "http://127.0.0.1:8094",
        "api_key": "dev-ivr-key",
        "customer_id": "dev-customer",
    },
}
SIMULATED_PROVISIONING: Final = {
    "url": "http://127.0.0.1:8095/api.aspx",
    "security_key": "dev-ccm-key",
}


def default() -> Config:
    """The embedded default: loopback, ``./var``, one unauthenticated source per vendor, each
    with its API at the simulated PBX's default address."""
    sources: list[dict[str, Any]] = []
    for name in IMPLEMENTED_VENDORS:
        source: dict[str, Any] = {"name": name, "vendor": name}
        if name in SIMULATED_APIS:
            source["api"] = SIMULATED_APIS[name]
        if name == "coocenter":
            source["provisioning"] = SIMULATED_PROVISIONING
        sources.append(source)
    return from_dict({"sources": sources})


def override(config: Config, *, listen: str | None, data_dir: str | None) -> Config:
    """Command-line flags win over the file; the result is validated like the file."""
    raw = msgspec.to_builtins(config)
    if listen is not None:
        raw["server"]["listen"] = listen
    if data_dir is not None:
        raw["storage"]["data_dir"] = data_dir
    return from_dict(raw)
