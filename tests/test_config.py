"""Config: typed, validated once, errors that name the key path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import config
from bridge.cli import main
from bridge.config import AuthWebkey
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "pbx-bridge.example.toml"


def error_of(raw: dict[str, object]) -> ConfigError:
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


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented example file loads (its secrets come from the environment)."""
    monkeypatch.setenv("COOCENTER_WEBKEY", "example-webkey")
    monkeypatch.setenv("ONCALL_PASSWORD", "example-password")
    monkeypatch.setenv("CALLOG_TOKEN", "example-token-123")
    assert config.load(EXAMPLE).sources


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
