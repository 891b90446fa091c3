"""Hostile input gets a precise 4xx, never a 500: raw bytes on a real socket to a real daemon."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.app import Daemon
from bridge.events import Event
from bridge.vendors import coocenter
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.registry import VENDORS
from tests.conftest import daemon_config

TOKEN = "hostile-input-token-0123456789"
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Daemon]:
    config = daemon_config(
        tmp_path / "data",
        api={"tokens": [TOKEN]},
        sources=[
            {"name": "open", "vendor": "coocenter"},
            {"name": "coral", "vendor": "coral"},
            {
                "name": "basic",
                "vendor": "oncall",
                "auth": {"type": "basic", "username": "u", "password": "p"},
            },
            {
                "name": "digest",
                "vendor": "oncall",
                "auth": {"type": "digest", "username": "u", "password": "p"},
            },
            {"name": "zycoo", "vendor": "coocenter", "auth": {"type": "webkey", "webkey": "k"}},
        ],
    )
    async with Daemon(config) as running:
        yield running


async def status_of(daemon: Daemon, request: bytes) -> int:
    """Send ``request`` as bytes (headers may hold what no client library would send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1])


def get(path: str, *headers: bytes) -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def post(path: str, body: bytes, *headers: bytes) -> bytes:
    lines = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join([*lines, b"Connection: close", b"", body])


BEARER = b"Authorization: Bearer " + TOKEN.encode()


@pytest.mark.parametrize("source", ["open", "coral"])
async def test_json_nested_thousands_deep_is_refused(bridge: Daemon, source: str) -> None:
    """A body nested 5,000 deep is unreadable JSON (4xx), not a crash of the normaliser."""
    status = await status_of(bridge, post(f"/ingest/{source}", DEEP))
    assert 400 <= status < 500


async def test_a_deep_body_to_reprocess_is_a_400(bridge: Daemon) -> None:
    """The admin API reads JSON bodies with the same bound."""
    assert await status_of(bridge, post("/v1/quarantine/reprocess", DEEP, BEARER)) == 400


@pytest.mark.parametrize(
    "value", ["\u00b2".encode(), b"9" * 4301, str(2**63).encode(), b"-1", b"1e3"]
)
async def test_a_last_event_id_that_is_no_seq_is_a_400(bridge: Daemon, value: bytes) -> None:
    """Superscripts, thousands of digits, more than SQLite holds: 400 naming the header."""
    request = get("/v1/events/stream", BEARER, b"Last-Event-ID: " + value)
    assert await status_of(bridge, request) == 400


@pytest.mark.parametrize(
    "query", ["after=" + "9" * 4301, "after=" + str(2**63), "limit=" + "9" * 30]
)
async def test_integer_parameters_out_of_any_range_are_a_400(bridge: Daemon, query: str) -> None:
    """An integer parameter with too many digits is refused, not converted."""
    assert await status_of(bridge, get(f"/v1/events?{query}", BEARER)) == 400


@pytest.mark.parametrize("entry", ["%C2%B2", "99999999999999999999", "-3"])
async def test_quarantine_ids_that_are_no_ids_are_a_404(bridge: Daemon, entry: str) -> None:
    """No such entry: 404, whatever the path segment holds."""
    assert await status_of(bridge, get(f"/v1/quarantine/{entry}", BEARER)) == 404


async def test_reprocessing_ids_beyond_sqlite_is_a_400(bridge: Daemon) -> None:
    """An id no SQLite integer can hold is a bad request, not an overflow inside the query."""
    body = b'{"ids": [99999999999999999999]}'
    assert await status_of(bridge, post("/v1/quarantine/reprocess", body, BEARER)) == 400


@pytest.mark.parametrize(
    ("source", "header"),
    [
        ("basic", b"Authorization: Basic \xe9"),
        ("basic", b"Authorization: Basic \xff\xfe=="),
        ("digest", b'Authorization: Digest username="\xe9", realm="x", nonce="\xff"'),
        ("zycoo", b"Authorization: \xe9\xe9\xe9"),
    ],
)
async def test_credentials_that_are_not_utf8_are_a_401(
    bridge: Daemon, source: str, header: bytes
) -> None:
    """Latin-1 or garbage bytes in a credential are wrong credentials (401), not a 500."""
    body = b'{"event_type": "call_ended", "call_id": "x"}'
    assert await status_of(bridge, post(f"/ingest/{source}", body, header)) == 401


async def test_a_bearer_token_that_is_not_utf8_is_a_401(bridge: Daemon) -> None:
    """The API's token check compares bytes as sent."""
    request = get("/v1/events", b"Authorization: Bearer \xe9\xff")
    assert await status_of(bridge, request) == 401


def _broken(payload: Payload, ctx: SourceContext) -> list[Event]:
    if b"boom" in payload.body:
        raise ZeroDivisionError("a bug in a normaliser")
    return coocenter.normalize(payload, ctx)


async def test_a_normaliser_bug_quarantines_the_push_and_the_source_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A normaliser that raises: the push is kept in quarantine (4xx), the next one commits."""
    broken = dataclasses.replace(VENDORS["coocenter"], normalize=_broken)
    monkeypatch.setitem(VENDORS, "coocenter", broken)
    config = daemon_config(tmp_path / "data", sources=[{"name": "hq", "vendor": "coocenter"}])
    async with Daemon(config) as daemon:
        status = await status_of(daemon, post("/ingest/hq", b'{"event": "boom"}'))
        assert status == 400
        entries = await daemon.ingest.quarantine.entries(state="held", limit=10)
        assert [e["error"] for e in entries] == ["the bridge could not read it (ZeroDivisionError)"]
        fine = b'{"event":"extensionstatus","exten":"808","status":"0"}'
        assert await status_of(daemon, post("/ingest/hq", fine)) == 200


async def test_a_replay_past_the_newest_event_is_refused(tmp_path: Path) -> None:
    """replay --from-seq beyond the outbox would move the cursor past events not yet written."""
    secret = "whsec_" + base64.b64encode(b"0" * 24).decode()
    sink = {"type": "webhook", "name": "crm", "url": "http://127.0.0.1:9/hook", "secrets": [secret]}
    config = daemon_config(tmp_path / "data", api={"tokens": [TOKEN]}, sinks=[sink])
    async with Daemon(config) as daemon:
        late = await status_of(daemon, post("/v1/sinks/crm/replay", b'{"from_seq": 99999}', BEARER))
        assert late == 400
        assert (
            await status_of(daemon, post("/v1/sinks/crm/replay", b'{"from_seq": 1}', BEARER)) == 200
        )
