"""Quarantine: authenticated payloads that cannot be read are kept and can be re-processed."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import opscli
from bridge.app import Daemon
from bridge.errors import PayloadError
from bridge.events import Event, make_event
from bridge.vendors.base import Payload, SourceContext, Vendor
from tests.conftest import base_url, daemon_config

BROKEN = {"event": "dialbegin", "uniqueid": "1534993030.626", "timestamp": "yesterday"}


async def post(daemon: Daemon, body: Any, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        url = base_url(daemon) + "/ingest/coocenter"
        async with http.post(url, data=data, json=json_body, **kw) as response:
            return response.status, await response.json(content_type=None)


async def test_unreadable_payload_is_refused_and_kept(daemon: Daemon) -> None:
    """400 names the problem and the quarantine id; the entry holds the field and error."""
    status, answer = await post(daemon, BROKEN)
    assert status == 400
    assert answer["field"] == "timestamp"
    (entry,) = await daemon.ingest.quarantine.entries()
    assert entry["id"] == answer["quarantine_id"]
    assert (entry["source"], entry["field"], entry["state"], entry["seen"]) == (
        "coocenter",
        "timestamp",
        "held",
        1,
    )


async def test_retransmissions_are_kept_once(daemon: Daemon) -> None:
    """The PBX retrying a bad push adds to `seen`, not to the quarantine."""
    for _ in range(3):
        await post(daemon, BROKEN)
    (entry,) = await daemon.ingest.quarantine.entries()
    assert entry["seen"] == 3


async def test_invalid_json_is_kept_byte_exact(daemon: Daemon) -> None:
    """Even a body that is not JSON is kept exactly as received."""
    body = b'{"event": "hangup", "uniqueid": '
    status, answer = await post(daemon, body)
    assert status == 400
    shown = await daemon.ingest.quarantine.show(answer["quarantine_id"])
    assert shown is not None
    assert shown["body"] == body.decode()


async def test_unauthenticated_payload_is_not_kept(tmp_path: Path) -> None:
    """Only authenticated payloads reach the quarantine: a 401 stores nothing."""
    sources = [
        {"name": "coocenter", "vendor": "coocenter", "auth": {"type": "token", "token": "t" * 10}}
    ]
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        assert (await post(daemon, BROKEN))[0] == 401
        assert await daemon.ingest.quarantine.entries() == []


def fixed_normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """A 'mapping fix': reads the broken push as a call.initiated at its receipt time."""
    return [
        make_event(
            source_name=ctx.name,
            vendor="coocenter",
            vendorevent="dialbegin",
            type="call.initiated",
            time=ctx.received_at,
            subject="call/1534993030.626",
            identity=("1534993030.626",),
            data={"call_id": "1534993030.626"},
        )
    ]


def still_broken(payload: Payload, ctx: SourceContext) -> list[Event]:
    raise PayloadError("timestamp", "still not a time")


def install(daemon: Daemon, normalize: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    source = daemon.ingest._sources["coocenter"]
    vendor: Vendor = dataclasses.replace(source.vendor, normalize=normalize)
    monkeypatch.setitem(
        daemon.ingest._sources, "coocenter", dataclasses.replace(source, vendor=vendor)
    )


async def test_reprocess_after_a_fix_commits_and_marks(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a mapping fix, reprocess commits the events and marks the entry reprocessed."""
    _, answer = await post(daemon, BROKEN)
    install(daemon, fixed_normalize, monkeypatch)
    (result,) = await daemon.ingest.quarantine.reprocess(None)
    assert result == {"id": answer["quarantine_id"], "result": "reprocessed", "events": 1, "new": 1}
    assert daemon.writer.last_seq == 1
    assert await daemon.ingest.quarantine.entries() == []
    assert await daemon.ingest.quarantine.reprocess(None) == []  # nothing held any more


async def test_reprocess_that_still_fails_keeps_the_entry(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payload the current normaliser still cannot read stays held, with the new error."""
    _, answer = await post(daemon, BROKEN)
    install(daemon, still_broken, monkeypatch)
    (result,) = await daemon.ingest.quarantine.reprocess([answer["quarantine_id"]])
    assert result["result"] == "failed"
    (entry,) = await daemon.ingest.quarantine.entries()
    assert entry["error"] == "still not a time"
    assert daemon.writer.last_seq == 0


async def test_cli_lists_and_reprocesses_through_the_api(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pbx-bridge quarantine list|show|reprocess` work against the running daemon's API."""
    _, answer = await post(daemon, BROKEN)
    entry_id = answer["quarantine_id"]
    out = io.StringIO()
    common = {"url": base_url(daemon), "token": None, "every": False, "state": "held", "out": out}
    assert await opscli.quarantine(action="list", ids=[], **common) == 0
    assert "timestamp" in out.getvalue()
    assert await opscli.quarantine(action="show", ids=[entry_id], **common) == 0
    assert "yesterday" in out.getvalue().split("1 entries")[1]
    install(daemon, fixed_normalize, monkeypatch)
    assert await opscli.quarantine(action="reprocess", ids=[entry_id], **common) == 0
    assert daemon.writer.last_seq == 1


async def test_refused_but_not_kept_is_503(daemon: Daemon) -> None:
    """If the payload cannot even be quarantined, the vendor gets 503 and retries."""
    with sqlite3.connect(daemon.config.storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER full BEFORE INSERT ON quarantine BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    status, answer = await post(daemon, BROKEN)
    assert status == 503
    assert answer["error"] == "outbox_unavailable"
