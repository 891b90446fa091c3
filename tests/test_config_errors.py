"""Config errors: every mistake of a file at once, each at its key path, in words that help."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bridge import config
from bridge.cli import main
from bridge.config_auth import VENDOR_AUTH
from bridge.errors import ConfigError

SECRET = "whsec_cmVwbGFjZSB3aXRoIDMyIHJhbmRvbSBieXRlcyEhISE="


def error_of(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config.from_dict(raw)
    return caught.value


def sources(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "hq", "vendor": "coocenter"}, *extra]


def webhook() -> dict[str, Any]:
    return {"type": "webhook", "name": "crm", "url": "https://crm.test/hook", "secrets": [SECRET]}


def test_unknown_top_level_key_suggests_the_known_one() -> None:
    """A misspelt section is named and the intended one suggested."""
    err = error_of({"servr": {"listen": "127.0.0.1:1"}})
    assert err.problems == [("servr", "unknown key; did you mean 'server'?")]
    assert err.path == "servr"


def test_unknown_key_in_a_source_names_the_source() -> None:
    """The path of a mistake inside [[sources]] names the entry by its index and its name."""
    err = error_of({"sources": sources({"name": "office", "vendor": "coral", "tmezone": "UTC"})})
    assert str(err) == "sources[1] (office).tmezone: unknown key; did you mean 'timezone'?"
    assert err.path == "sources[1].tmezone"  # for programs: indexes only


def test_unknown_key_with_no_close_match_lists_the_keys() -> None:
    """With nothing close, the keys that table accepts are listed instead."""
    err = error_of({"logging": {"colour": True}})
    assert err.problems == [("logging.colour", "unknown key; the keys here are level, format")]


def test_bad_literal_lists_the_valid_values() -> None:
    """A value outside a literal's set says which values there are."""
    err = error_of({"storage": {"synchronous": "fast"}})
    assert (
        str(err) == "storage.synchronous: expected one of 'full', 'normal', got the string 'fast'"
    )


def test_near_miss_literal_is_suggested() -> None:
    """A near miss of a valid value gets a did-you-mean as well."""
    err = error_of({"logging": {"level": "warn"}})
    assert err.problem == (
        "expected one of 'debug', 'info', 'warning', 'error', got the string 'warn'"
        "; did you mean 'warning'?"
    )


def test_wrong_type_is_said_in_words() -> None:
    """A string where a number belongs says so, with the bounds and the value as written."""
    err = error_of({"sources": [{"name": "hq", "vendor": "coocenter", "missed_settle_s": "3s"}]})
    assert str(err) == (
        "sources[0] (hq).missed_settle_s: expected a number from 0 to 86400, got the string '3s'"
    )


def test_out_of_range_number_states_the_range() -> None:
    """A number outside its range is shown with the range it must be in."""
    err = error_of({"server": {"max_connections": 0}})
    assert err.problems == [("server.max_connections", "expected an integer greater than 0, got 0")]


def test_bad_tag_lists_the_auth_types() -> None:
    """An unknown auth type lists every type and suggests the closest."""
    err = error_of({"sources": [{"name": "hq", "vendor": "coocenter", "auth": {"type": "webky"}}]})
    assert err.problems == [
        (
            "sources[0] (hq).auth.type",
            "expected one of 'none', 'token', 'basic', 'digest', 'webkey', got the string"
            " 'webky'; did you mean 'webkey'?",
        )
    ]


def test_missing_sink_type_lists_the_sink_types() -> None:
    """A sink without its type says which types there are."""
    raw = webhook()
    del raw["type"]
    err = error_of({"sinks": [raw]})
    assert err.problems == [
        ("sinks[0] (crm).type", "missing: this key is required (one of 'webhook', 'nats')")
    ]


def test_every_unset_environment_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three unset ${VARS} are three problems of one error, each at its key."""
    for name in ("PBX_WEBKEY", "CRM_URL", "CRM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    raw = {
        "sources": [
            {
                "name": "hq",
                "vendor": "coocenter",
                "auth": {"type": "webkey", "webkey": "${PBX_WEBKEY}"},
            }
        ],
        "sinks": [{**webhook(), "url": "https://${CRM_URL}/hook", "secrets": ["${CRM_SECRET}"]}],
    }
    assert error_of(raw).problems == [
        ("sources[0] (hq).auth.webkey", "environment variable PBX_WEBKEY is not set"),
        ("sinks[0] (crm).url", "environment variable CRM_URL is not set"),
        ("sinks[0] (crm).secrets[0]", "environment variable CRM_SECRET is not set"),
    ]


def test_sink_must_name_configured_sources() -> None:
    """A sink's sources must be configured source names."""
    err = error_of({"sources": sources(), "sinks": [{**webhook(), "sources": ["nope"]}]})
    assert err.problems == [
        ("sinks[0] (crm).sources[0]", "no source is named 'nope'; the sources are 'hq'")
    ]


def test_sink_source_typo_is_suggested() -> None:
    """A near miss of a source name is suggested, even when that source has a mistake of its own."""
    raw = {
        "sources": [{"name": "office", "vendor": "coral", "missed_settle_s": -1}],
        "sinks": [{**webhook(), "sources": ["ofice"]}],
    }
    assert error_of(raw).problems == [
        ("sources[0] (office).missed_settle_s", "expected a number from 0 to 86400, got -1"),
        ("sinks[0] (crm).sources[0]", "no source is named 'ofice'; did you mean 'office'?"),
    ]


def test_type_pattern_must_match_an_event_type() -> None:
    """'calls.*' matches nothing: refused, with the family that exists."""
    err = error_of({"sinks": [{**webhook(), "types": ["call.missed", "calls.*"]}]})
    assert err.problems == [
        ("sinks[0] (crm).types[1]", "'calls.*' matches no event type; did you mean 'call.*'?")
    ]


def test_type_pattern_far_from_anything_lists_the_families() -> None:
    """With nothing close, the valid forms and the families are listed."""
    err = error_of({"sinks": [{**webhook(), "types": ["zzz"]}]})
    assert err.problem == (
        "'zzz' matches no event type; expected '*', an event type, or a family: agent.*, call.*,"
        " command.*, extension.*, ivr.*, pbx.*, raw.*, source.*"
    )


def test_valid_type_filters_are_accepted() -> None:
    """'*', a type and a family all pass, in types and as expire_s keys."""
    sink = {**webhook(), "types": ["*", "call.missed", "agent.*"], "expire_s": {"call.*": 60}}
    loaded = config.from_dict({"sinks": [sink]})
    assert loaded.sinks[0].types == ("*", "call.missed", "agent.*")


def test_expire_s_key_must_match_an_event_type() -> None:
    """expire_s keys are type patterns: one that matches no type is refused, quoted as TOML."""
    err = error_of({"sinks": [{**webhook(), "expire_s": {"call.rining": 60}}]})
    assert err.problems == [
        (
            'sinks[0] (crm).expire_s."call.rining"',
            "'call.rining' matches no event type; did you mean 'call.ringing'?",
        )
    ]


def test_auth_type_must_suit_the_vendor() -> None:
    """A Coral PBX cannot send a CooCenter WEBKEY: refused, listing what Coral can use."""
    raw = {
        "sources": [
            {"name": "office", "vendor": "coral", "auth": {"type": "webkey", "webkey": "k"}}
        ]
    }
    assert error_of(raw).problems == [
        (
            "sources[0] (office).auth.type",
            "'coral' sources cannot use 'webkey' authentication; expected one of 'none', 'token'",
        )
    ]


@pytest.mark.parametrize(
    ("vendor", "auth"),
    [(vendor, auth) for vendor, types in VENDOR_AUTH.items() for auth in types],
)
def test_every_auth_type_a_vendor_supports_loads(vendor: str, auth: str) -> None:
    """Each vendor accepts each auth type listed for it."""
    tables = {
        "none": {},
        "token": {"token": "t" * 12},
        "basic": {"username": "u", "password": "p"},
        "digest": {"username": "u", "password": "p"},
        "webkey": {"webkey": "k"},
    }
    source = {"name": "a", "vendor": vendor, "auth": {"type": auth, **tables[auth]}}
    assert config.from_dict({"sources": [source]}).sources[0].auth.__struct_config__.tag == auth


def test_vendor_typo_is_suggested() -> None:
    """An unknown vendor lists the vendors and suggests the closest."""
    err = error_of({"sources": [{"name": "a", "vendor": "coocentre"}]})
    assert err.problems == [
        (
            "sources[0] (a).vendor",
            "expected one of 'coocenter', 'coral', 'oncall', 'callog', got 'coocentre'"
            "; did you mean 'coocenter'?",
        )
    ]


def test_nats_sink_without_the_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the nats client not importable, a nats sink is refused at load with the fix."""
    monkeypatch.setitem(sys.modules, "nats", None)
    err = error_of({"sinks": [{"type": "nats", "name": "stream"}]})
    assert err.problems == [
        (
            "sinks[0] (stream).type",
            "a nats sink needs the optional NATS client: pip install 'pbx-bridge[nats]'",
        )
    ]


def test_nats_sink_loads_when_the_extra_is_installed() -> None:
    """With the client importable the same sink loads."""
    pytest.importorskip("nats")
    assert (
        config.from_dict({"sinks": [{"type": "nats", "name": "stream"}]}).sinks[0].name == "stream"
    )


def test_checks_still_run_on_an_entry_with_a_mistake() -> None:
    """A typo in a source hides neither its bad time zone nor its auth unfit for the vendor."""
    raw = {
        "sources": [
            {
                "name": "office",
                "vendor": "coral",
                "dids": "4000",
                "timezone": "Asia/Kolkatta",
                "auth": {"type": "basic", "username": "u", "password": "p"},
            }
        ]
    }
    assert error_of(raw).problems == [
        ("sources[0] (office).dids", "expected a list, got the string '4000'"),
        (
            "sources[0] (office).timezone",
            "unknown time zone 'Asia/Kolkatta'; did you mean 'Asia/Kolkata'?",
        ),
        (
            "sources[0] (office).auth.type",
            "'coral' sources cannot use 'basic' authentication; expected one of 'none', 'token'",
        ),
    ]


def test_a_wrong_secret_is_described_not_echoed() -> None:
    """An API token too short is reported by its length: the value itself is never printed."""
    err = error_of({"api": {"tokens": ["hunter2-secret"]}})
    assert err.problems == [
        (
            "api.tokens[0]",
            "expected a string of at least 16 characters, got a string of 14 characters",
        )
    ]
    assert "hunter2" not in str(err)


def test_credentials_in_a_bad_url_are_masked() -> None:
    """A URL refused for its scheme is shown without its user info or query values."""
    err = error_of({"sinks": [{**webhook(), "url": "ftp://me:pw@crm.test/x?key=k3y"}]})
    assert err.problems == [
        (
            "sinks[0] (crm).url",
            "expected an http:// or https:// URL, got 'ftp://***@crm.test/x?key=***'",
        )
    ]


def test_duplicate_names_point_at_the_first() -> None:
    """A second entry with a taken name is refused, saying where the first is."""
    err = error_of({"sources": sources({"name": "hq", "vendor": "coral"})})
    assert err.problems == [
        ("sources[1] (hq).name", "duplicate source name 'hq' (also sources[0])")
    ]


def test_realtime_rules_are_collected_with_the_rest() -> None:
    """The realtime table's own rules are reported together, each at its key."""
    realtime = {"url": "http://pbx/rt", "destinations": [], "reconnect_max_s": 0.5}
    err = error_of({"sources": [{"name": "c", "vendor": "coral", "realtime": realtime}]})
    assert err.problems == [
        ("sources[0] (c).realtime.url", "expected a ws:// or wss:// URL, got 'http://pbx/rt'"),
        ("sources[0] (c).realtime.destinations", "subscribe to at least one destination"),
        ("sources[0] (c).realtime.reconnect_max_s", "must not be less than reconnect_min_s"),
    ]


THREE_MISTAKES = """\
[server]
listen = "127.0.0.1:8480"

[storage]
synchronous = "fast"

[[sources]]
name = "office"
vendor = "coral"
auth = { type = "webkey", webkey = "k" }

[[sinks]]
type = "webhook"
name = "crm"
url = "https://crm.test/hook"
secrets = ["whsec_cmVwbGFjZSB3aXRoIDMyIHJhbmRvbSBieXRlcyEhISE="]
types = ["calls.*"]
"""

THREE_PROBLEMS = [
    ("storage.synchronous", "expected one of 'full', 'normal', got the string 'fast'"),
    (
        "sources[0] (office).auth.type",
        "'coral' sources cannot use 'webkey' authentication; expected one of 'none', 'token'",
    ),
    ("sinks[0] (crm).types[0]", "'calls.*' matches no event type; did you mean 'call.*'?"),
]


def test_a_file_with_three_mistakes_reports_all_three(tmp_path: Path) -> None:
    """Three different mistakes, one load: three problems, in the file's order."""
    path = tmp_path / "bad.toml"
    path.write_text(THREE_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == THREE_PROBLEMS
    assert str(caught.value).splitlines() == [f"{where}: {text}" for where, text in THREE_PROBLEMS]


def test_check_config_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 2 and shows each of the file's problems on a line of its own."""
    path = tmp_path / "bad.toml"
    path.write_text(THREE_MISTAKES)
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    for where, text in THREE_PROBLEMS:
        assert any(line.endswith(f"{where}: {text}") for line in lines), (where, lines)


def test_one_problem_errors_read_as_before() -> None:
    """ConfigError(path, problem) still makes a one-line error with those attributes."""
    err = ConfigError("server.listen", "expected HOST:PORT")
    assert (str(err), err.path, err.problem) == (
        "server.listen: expected HOST:PORT",
        "server.listen",
        "expected HOST:PORT",
    )
    assert err.problems == [("server.listen", "expected HOST:PORT")]
