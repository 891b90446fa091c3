"""Config: typed, validated once, errors that name the key path."""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridge import config, config_show
from bridge.cli import main
from bridge.config import AuthWebkey
from bridge.config_walk import SECRET_KEYS, SECRET_TABLES, URL_KEYS
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "pbx-bridge.example.toml"


def error_of(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config.from_dict(raw)
    return caught.value


def test_default_is_loopback_with_one_open_source_per_vendor() -> None:
    """No file: loopback listener, ./var, an unauthenticated source named after each vendor."""
    loaded = config.default()
    assert config.is_loopback(loaded.server.host)
    assert loaded.storage.data_dir == "./var"
    assert [(s.name, s.vendor, s.auth.__class__.__name__) for s in loaded.sources] == [
        (vendor, vendor, "AuthNone") for vendor in config.IMPLEMENTED_VENDORS
    ]


def test_wrong_type_names_the_key_path() -> None:
    """A wrong type is reported with its dotted path."""
    assert error_of({"storage": {"linger_ms": "soon"}}).path == "storage.linger_ms"


def test_nested_source_error_names_the_index() -> None:
    """Errors inside a list name the element."""
    raw = {
        "sources": [{"name": "a", "vendor": "coocenter", "auth": {"type": "token", "token": "x"}}]
    }
    assert error_of(raw).path == "sources[0].auth.token"


def test_unknown_key_is_refused() -> None:
    """A typo is an error, not silently ignored."""
    assert "syncronous" in str(error_of({"storage": {"syncronous": "full"}}))


def test_unknown_time_zone_is_refused() -> None:
    """Time zones are checked at load, not at the first push."""
    raw = {"sources": [{"name": "a", "vendor": "coocenter", "timezone": "Mars/Olympus"}]}
    assert error_of(raw).path == "sources[0].timezone"


def test_duplicate_source_names_are_refused() -> None:
    """Source names are URLs: they must be unique."""
    raw = {"sources": [{"name": "a", "vendor": "coocenter"}, {"name": "a", "vendor": "coocenter"}]}
    assert error_of(raw).path == "sources[1].name"


def test_public_listener_without_api_token_is_refused() -> None:
    """A non-loopback listener with no consumer token refuses to start."""
    err = error_of({"server": {"listen": "0.0.0.0:8480"}})
    assert err.path == "api.tokens"


def test_open_source_on_public_listener_needs_allow_list() -> None:
    """auth 'none' off loopback needs an IP allow-list."""
    raw = {
        "server": {"listen": "0.0.0.0:8480"},
        "api": {"tokens": ["t" * 32]},
        "sources": [{"name": "a", "vendor": "coocenter"}],
    }
    assert error_of(raw).path == "sources[0].auth"


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR} is replaced from the environment; an unset one is an error naming the key."""
    monkeypatch.setenv("PBX_WEBKEY", "s3cret")
    raw = {
        "sources": [
            {
                "name": "a",
                "vendor": "coocenter",
                "auth": {"type": "webkey", "webkey": "${PBX_WEBKEY}"},
            }
        ]
    }
    auth = config.from_dict(raw).sources[0].auth
    assert isinstance(auth, AuthWebkey)
    assert auth.webkey == "s3cret"
    monkeypatch.delenv("PBX_WEBKEY")
    assert error_of(raw).path == "sources[0].auth.webkey"


def test_flags_override_the_file() -> None:
    """--listen and --data-dir win over the file and are validated like it."""
    loaded = config.override(config.default(), listen="127.0.0.1:0", data_dir="/tmp/x")
    assert (loaded.server.port, loaded.storage.data_dir) == (0, "/tmp/x")
    with pytest.raises(ConfigError):
        config.override(config.default(), listen="nonsense", data_dir=None)


def test_example_config_passes_check_config_as_shipped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pbx-bridge check-config` accepts the example with no environment variables set."""
    for name in ("COOCENTER_WEBKEY", "ONCALL_PASSWORD", "CALLOG_TOKEN", "CRM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["check-config", str(EXAMPLE)]) == 0, capsys.readouterr().err
    loaded = config.load(EXAMPLE)
    assert [source.vendor for source in loaded.sources] == list(config.IMPLEMENTED_VENDORS)
    assert [sink.name for sink in loaded.sinks] == ["crm"]


def _struct_fields(
    cls: type[msgspec.Struct], seen: set[type]
) -> Iterator[tuple[type[msgspec.Struct], msgspec.structs.FieldInfo]]:
    """Every field of ``cls`` and of every struct its fields hold, each once."""
    if cls in seen:
        return
    seen.add(cls)
    for field in msgspec.structs.fields(cls):
        yield cls, field
        pending = [field.type]
        while pending:
            tp = pending.pop()
            if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
                yield from _struct_fields(tp, seen)
            else:
                pending.extend(arg for arg in typing.get_args(tp) if arg is not ...)


def _documented(key: str) -> str:
    """A key set in the example (commented out or not, inline or not), or a table's header."""
    name = re.escape(key)
    return rf"(^|[\s{{,#]){name} =|^#? ?\[\[?([a-z_]+\.)?{name}\]"


def test_every_config_key_is_documented_in_the_example() -> None:
    """Each key of every config struct, nested ones included, appears in the example file."""
    text = EXAMPLE.read_text()
    keys = {
        (cls.__name__, field.encode_name) for cls, field in _struct_fields(config.Config, set())
    }
    assert ("RealtimeConfig", "passcode") in keys  # the walk reaches nested and union structs
    assert ("NatsSinkConfig", "user") in keys
    missing = [
        f"{struct}.{key}"
        for struct, key in sorted(keys)
        if not re.search(_documented(key), text, re.MULTILINE)
    ]
    assert missing == []


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config exits 0 for a good file and 2 with the key path for a bad one."""
    good = tmp_path / "good.toml"
    good.write_text('[[sources]]\nname = "hq"\nvendor = "coocenter"\n')
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage]\nmax_batch = -1\n")
    assert main(["check-config", str(bad)]) == 2
    assert "storage.max_batch" in capsys.readouterr().err


def test_run_refuses_public_listener_without_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pbx-bridge run --listen 0.0.0.0:...` with no API token exits with a clear message."""
    assert main(["run", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)]) == 2
    assert "api.tokens" in capsys.readouterr().err
    assert not (tmp_path / "outbox.sqlite3").exists()


@pytest.fixture
def restore_globals() -> Iterator[None]:
    """`run` installs uvloop and configures logging for the process: undo that for other tests."""
    yield
    import asyncio
    import logging

    import structlog

    asyncio.set_event_loop_policy(None)
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


@pytest.mark.usefixtures("restore_globals")
def test_run_reports_a_taken_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use is a one-line error and exit code 1, not a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)])
    assert code == 1
    assert "cannot start" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value"),
    [("missed_settle_s", -1), ("missed_settle_s", "soon"), ("recording_base_url", "ftp://pbx/")],
)
def test_call_settings_are_checked(key: str, value: object) -> None:
    """A negative settle window or a recording base that is no http(s) URL is refused."""
    raw = {"sources": [{"name": "a", "vendor": "coocenter", key: value}]}
    assert error_of(raw).path == f"sources[0].{key}"


def test_call_settings_reach_the_normaliser_context() -> None:
    """DIDs, trunk hosts (case-folded) and the recording base are in every payload's context."""
    from bridge.vendors.base import context_template

    raw = {
        "sources": [
            {
                "name": "a",
                "vendor": "oncall",
                "dids": ["4000"],
                "trunk_hosts": ["Trunk.Example.NET"],
                "recording_base_url": "https://pbx.example.com/rec/",
            }
        ]
    }
    ctx = context_template(config.from_dict(raw).sources[0], "oncall")
    assert ctx.dids == {"4000"}
    assert ctx.trunk_hosts == {"trunk.example.net"}
    assert ctx.recording_base_url == "https://pbx.example.com/rec/"


SHOWN = {
    "api": {
        "tokens": [
            "plain-token-every-scope",
            {"token": "scoped-token-read-only", "scopes": ["read"]},
        ]
    },
    "sources": [
        {
            "name": "hq",
            "vendor": "coocenter",
            "auth": {"type": "webkey", "webkey": "webkey-s3cret"},
            "recording_base_url": "https://rec:rec-pw@pbx.test/rec/?sig=rec-sig",
        },
        {
            "name": "pbx2",
            "vendor": "oncall",
            "auth": {"type": "digest", "username": "portsip", "password": "digest-pw"},
        },
        {"name": "log", "vendor": "callog", "auth": {"type": "token", "token": "callog-token"}},
        {
            "name": "rt",
            "vendor": "coral",
            "realtime": {
                "url": "wss://rt:rt-pw@pbx.test/rt",
                "login": "op",
                "passcode": "stomp-pc",
            },
        },
    ],
    "sinks": [
        {
            "type": "webhook",
            "name": "crm",
            "url": "https://hook:hook-pw@crm.test/in?key=url-key",
            "secrets": ["whsec_cmVwbGFjZSB3aXRoIDMyIHJhbmRvbSBieXRlcyEhISE="],
            "headers": {"X-Api-Key": "header-key"},
        },
        {
            "type": "nats",
            "name": "bus",
            "servers": ["nats://bus:bus-pw@127.0.0.1:4222"],
            "user": "nats-user",
            "password": "nats-pw",
            "token": "nats-token",
        },
    ],
}
SECRETS = [
    "plain-token-every-scope",
    "scoped-token-read-only",
    "webkey-s3cret",
    "rec-pw",
    "rec-sig",
    "digest-pw",
    "callog-token",
    "rt-pw",
    "stomp-pc",
    "hook-pw",
    "url-key",
    "cmVwbGFjZSB3aXRoIDMyIHJhbmRvbSBieXRlcyEhISE",
    "header-key",
    "bus-pw",
    "nats-user",
    "nats-pw",
    "nats-token",
]


def test_render_masks_every_secret() -> None:
    """No credential of any kind appears in the printed config."""
    pytest.importorskip("nats")
    text = config_show.render(config.from_dict(SHOWN))
    assert [secret for secret in SECRETS if secret in text] == []


def test_render_is_the_effective_config_as_toml() -> None:
    """The output parses back, with defaults filled in and the non-secret values as configured."""
    pytest.importorskip("nats")
    shown = tomllib.loads(config_show.render(config.from_dict(SHOWN)))
    assert shown["server"]["listen"] == "127.0.0.1:8480"  # a default, filled in
    assert shown["storage"]["synchronous"] == "full"
    assert shown["api"]["tokens"] == ["***", {"token": "***", "scopes": ["read"]}]
    hq, pbx2, _, rt = shown["sources"]
    assert hq["auth"] == {"type": "webkey", "webkey": "***"}
    assert hq["recording_base_url"] == "https://***@pbx.test/rec/?sig=***"
    assert (pbx2["auth"]["username"], pbx2["auth"]["password"]) == ("portsip", "***")
    assert (rt["realtime"]["login"], rt["realtime"]["url"]) == ("op", "wss://***@pbx.test/rt")
    crm, bus = shown["sinks"]
    assert crm["url"] == "https://***@crm.test/in?key=***"
    assert (crm["secrets"], crm["headers"]) == (["***"], {"X-Api-Key": "***"})
    assert crm["retry_schedule_s"] == list(config.DEFAULT_RETRY_SCHEDULE_S)
    assert bus["servers"] == ["nats://***@127.0.0.1:4222"]
    assert (bus["user"], bus["password"], bus["token"], bus["stream"]) == (
        "***",
        "***",
        "***",
        "PBX",
    )


def test_render_leaves_unset_optional_keys_out() -> None:
    """TOML has no null: an optional key with no value is absent, not an error."""
    shown = tomllib.loads(config_show.render(config.default()))
    assert "recording_base_url" not in shown["sources"][0]
    assert "realtime" not in shown["sources"][0]


# String keys that are no credential and no URL: shown as configured. A new string key must be
# added here or to bridge.config_walk's secret or URL keys, so none is printed by accident.
PUBLIC_STRING_KEYS = {
    "listen",
    "data_dir",
    "synchronous",
    "scopes",
    "name",
    "level",
    "format",
    "vendor",
    "timezone",
    "type",
    "header",
    "query",
    "username",
    "realm",
    "allow_ips",
    "dids",
    "trunk_hosts",
    "destinations",
    "host",
    "login",
    "subprotocols",
    "types",
    "start",
    "sources",
    "expire_s",
    "stream",
    "subject_prefix",
    "agent_ip",
    "agent_number",
    "agent_id",
    "agent_name",
    "api_name_in",
    "api_name_key",
    "domain",
    "call_extension",
}


def _holds_text(tp: object) -> bool:
    if tp is str:
        return True
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return False
    return any(_holds_text(arg) for arg in typing.get_args(tp))


def test_every_string_key_is_classified_for_masking() -> None:
    """Each config key that can hold text is either public, a secret, or a URL to redact."""
    classified = PUBLIC_STRING_KEYS | SECRET_KEYS | SECRET_TABLES | URL_KEYS
    text_keys = {
        field.encode_name
        for _, field in _struct_fields(config.Config, set())
        if _holds_text(field.type)
    }
    assert {"token", "url", "webkey", "headers"} <= text_keys
    assert sorted(text_keys - classified) == []
