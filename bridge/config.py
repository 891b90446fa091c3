"""Typed configuration: TOML in, frozen objects out, validated once with key paths in errors.

Nothing else in the bridge reads TOML or the environment. See config/pbx-bridge.example.toml for
every key with its meaning.

A source's auth types live in :mod:`bridge.config_auth`, its realtime subscription in
:mod:`bridge.config_realtime`; both are re-exported here: import all config from this module.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from bridge.config_auth import Auth as Auth
from bridge.config_auth import AuthBasic as AuthBasic
from bridge.config_auth import AuthDigest as AuthDigest
from bridge.config_auth import AuthNone as AuthNone
from bridge.config_auth import AuthToken as AuthToken
from bridge.config_auth import AuthWebkey as AuthWebkey
from bridge.config_realtime import RealtimeConfig as RealtimeConfig
from bridge.config_realtime import check_realtime
from bridge.errors import ConfigError

IMPLEMENTED_VENDORS = ("coocenter", "coral", "oncall", "callog")

_Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
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


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tokens: tuple[Annotated[str, msgspec.Meta(min_length=16)], ...] = ()
    client_queue: _Positive = 1024
    page_limit_max: _Positive = 1000


class LoggingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


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


def _expand(value: Any, path: str) -> Any:
    """Replace ``${NAME}`` in every string with the environment variable's value."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {key: _expand(item, f"{path}.{key}" if path else key) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def _path_of(message: str) -> tuple[str, str]:
    """msgspec says ``... - at `$.sources[0].auth```: split that into (path, problem)."""
    problem, sep, where = message.rpartition(" - at `")
    if not sep:
        return "", message
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    return path, problem[0].lower() + problem[1:]


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    try:
        config = msgspec.convert(_expand(raw, ""), Config)
    except msgspec.ValidationError as exc:
        path, problem = _path_of(str(exc))
        raise ConfigError(path, problem) from None
    _check(config)
    return config


def _check(config: Config) -> None:
    """Rules that types alone cannot say."""
    from bridge.sinks.signing import parse_secret  # the one place that knows the format

    split_listen(config.server.listen, "server.listen")
    if not is_loopback(config.server.host) and not config.api.tokens:
        raise ConfigError(
            "api.tokens",
            f"listening on non-loopback {config.server.listen} requires at least one API token",
        )
    sink_names: set[str] = set()
    for index, sink in enumerate(config.sinks):
        path = f"sinks[{index}]"
        if sink.name in sink_names:
            raise ConfigError(f"{path}.name", f"duplicate sink name {sink.name!r}")
        sink_names.add(sink.name)
        if isinstance(sink, NatsSinkConfig):
            continue
        if not sink.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{path}.url", f"expected an http:// or https:// URL, got {sink.url!r}"
            )
        for secret_index, secret in enumerate(sink.secrets):
            try:
                parse_secret(secret)
            except ValueError as exc:
                raise ConfigError(f"{path}.secrets[{secret_index}]", str(exc)) from None
    seen: set[str] = set()
    for index, source in enumerate(config.sources):
        path = f"sources[{index}]"
        if source.name in seen:
            raise ConfigError(f"{path}.name", f"duplicate source name {source.name!r}")
        seen.add(source.name)
        if source.vendor not in IMPLEMENTED_VENDORS:
            known = ", ".join(IMPLEMENTED_VENDORS)
            raise ConfigError(
                f"{path}.vendor", f"unknown vendor {source.vendor!r} (known: {known})"
            )
        try:
            ZoneInfo(source.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{path}.timezone", f"unknown time zone {source.timezone!r}"
            ) from None
        if source.realtime is not None:
            check_realtime(source.realtime, f"{path}.realtime", source.vendor)
        base = source.recording_base_url
        if base is not None and not base.startswith(("http://", "https://")):
            raise ConfigError(
                f"{path}.recording_base_url", f"expected an http:// or https:// URL, got {base!r}"
            )
        for net_index, net in enumerate(source.allow_ips):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{path}.allow_ips[{net_index}]", f"not an IP address or network: {net!r}"
                ) from None
        if (
            isinstance(source.auth, AuthNone)
            and not source.allow_ips
            and not is_loopback(config.server.host)
        ):
            raise ConfigError(
                f"{path}.auth",
                "a source with auth type 'none' on a non-loopback listener needs allow_ips",
            )


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


def default() -> Config:
    """The embedded default: loopback, ``./var``, one unauthenticated source per vendor."""
    return from_dict({"sources": [{"name": name, "vendor": name} for name in IMPLEMENTED_VENDORS]})


def override(config: Config, *, listen: str | None, data_dir: str | None) -> Config:
    """Command-line flags win over the file; the result is validated like the file."""
    raw = msgspec.to_builtins(config)
    if listen is not None:
        raw["server"]["listen"] = listen
    if data_dir is not None:
        raw["storage"]["data_dir"] = data_dir
    return from_dict(raw)
