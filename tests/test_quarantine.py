"""Quarantine: authenticated payloads that cannot be read are kept and can be re-processed."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge import config, opscli
from bridge.app import Daemon
from bridge.errors import ConfigError, OutboxError, PayloadError, QuarantineFullError
from bridge.events import Event, make_event
from bridge.sources.quarantine import HELD_USAGE_SQL
from bridge.store import schema
from bridge.vendors.base import Payload, SourceContext, Vendor
from bridge.vendors.registry import VENDORS
from tests.conftest import base_url, daemon_config

BROKEN = {"event": "dialbegin", "uniqueid": "1534993030.626", "timestamp": "yesterday"}


def broken(n: int) -> dict[str, str]:
    """A distinct unreadable push (its own uniqueid), as long as every other ``broken(n)``."""
    return {**BROKEN, "uniqueid": f"1534993030.{n:03d}"}


async def push(
    daemon: Daemon, body: Any, *, source: str = "coocenter", **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    """The status, the decoded answer and the headers of one push."""
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        url = base_url(daemon) + f"/ingest/{source}"
        async with http.post(url, data=data, json=json_body, **kw) as response:
            answer = await response.json(content_type=None)
            return response.status, answer, dict(response.headers)


async def post(daemon: Daemon, body: Any, **kw: Any) -> tuple[int, Any]:
    status, answer, _ = await push(daemon, body, **kw)
    return status, answer


async def held(daemon: Daemon, source: str = "coocenter") -> list[dict[str, Any]]:
    return await daemon.quarantine.entries(source=source, limit=10_000)


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Daemon]:
    """Two sources of one vendor, ``hq`` and ``branch``, each may hold 2 entries."""
    sources = [
        {"name": "hq", "vendor": "coocenter", "quarantine_max_entries": 2},
        {"name": "branch", "vendor": "coocenter", "quarantine_max_entries": 2},
    ]
    async with Daemon(daemon_config(tmp_path / "data", sources=sources)) as daemon:
        yield daemon


async def test_unreadable_payload_is_refused_and_kept(daemon: Daemon) -> None:
    """400 names the problem and the quarantine id; the entry holds the field and error."""
    status, answer = await post(daemon, BROKEN)
    assert status == 400
    assert answer["field"] == "timestamp"
    (entry,) = await daemon.quarantine.entries()
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
    (entry,) = await daemon.quarantine.entries()
    assert entry["seen"] == 3


async def test_invalid_json_is_kept_byte_exact(daemon: Daemon) -> None:
    """Even a body that is not JSON is kept exactly as received."""
    body = b'{"event": "hangup", "uniqueid": '
    status, answer = await post(daemon, body)
    assert status == 400
    shown = await daemon.quarantine.show(answer["quarantine_id"])
    assert shown is not None
    assert shown["body"] == body.decode()


async def test_unauthenticated_payload_is_not_kept(tmp_path: Path) -> None:
    """Only authenticated payloads reach the quarantine: a 401 stores nothing."""
    sources = [
        {"name": "coocenter", "vendor": "coocenter", "auth": {"type": "token", "token": "t" * 10}}
    ]
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        assert (await post(daemon, BROKEN))[0] == 401
        assert await daemon.quarantine.entries() == []


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


def install(
    daemon: Daemon, normalize: Any, monkeypatch: pytest.MonkeyPatch, source: str = "coocenter"
) -> None:
    """A mapping fix, deployed: pushes and reprocess read with ``normalize`` from now on."""
    found = daemon.ingest._sources[source]
    vendor: Vendor = dataclasses.replace(found.vendor, normalize=normalize)
    monkeypatch.setitem(daemon.ingest._sources, source, dataclasses.replace(found, vendor=vendor))
    monkeypatch.setitem(VENDORS, found.vendor.name, vendor)


async def test_reprocess_after_a_fix_commits_and_marks(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a mapping fix, reprocess commits the events and marks the entry reprocessed."""
    _, answer = await post(daemon, BROKEN)
    install(daemon, fixed_normalize, monkeypatch)
    (result,) = await daemon.quarantine.reprocess(None)
    assert result == {"id": answer["quarantine_id"], "result": "reprocessed", "events": 1, "new": 1}
    assert daemon.writer.last_seq == 1
    assert await daemon.quarantine.entries() == []
    assert await daemon.quarantine.reprocess(None) == []  # nothing held any more


async def test_reprocess_that_still_fails_keeps_the_entry(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payload the current normaliser still cannot read stays held, with the new error."""
    _, answer = await post(daemon, BROKEN)
    install(daemon, still_broken, monkeypatch)
    (result,) = await daemon.quarantine.reprocess([answer["quarantine_id"]])
    assert result["result"] == "failed"
    (entry,) = await daemon.quarantine.entries()
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


async def test_the_daemon_builds_one_quarantine_for_ingest_and_the_api(daemon: Daemon) -> None:
    """What ingest keeps is what the admin API lists: one object, built by the daemon."""
    assert daemon.ingest.quarantine is daemon.quarantine
    _, answer = await post(daemon, BROKEN)
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/v1/quarantine") as response:
            listed = await response.json()
    assert [entry["id"] for entry in listed["entries"]] == [answer["quarantine_id"]]


# -- every way a payload cannot become events is kept, logged, counted -----------------------


async def test_a_body_that_is_not_utf8_is_kept_byte_exact(daemon: Daemon) -> None:
    """Bytes that are no text at all are kept as they came (shown as hex)."""
    body = b'{"event": "hangup", "uniqueid": "\xff\xfe"}'
    status, answer = await post(daemon, body, headers={"Content-Type": "application/json"})
    assert status == 400
    shown = await daemon.quarantine.show(answer["quarantine_id"])
    assert shown is not None
    assert bytes.fromhex(shown["body_hex"]) == body


async def raw_post(daemon: Daemon, head: bytes, body: bytes) -> tuple[int, bytes]:
    """A request written byte for byte (headers no client library would send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        writer.write(body)
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_content_type_that_is_not_utf8_is_kept(daemon: Daemon) -> None:
    """A Latin-1 Content-Type is stored (escaped) with the payload: a 400, not a 500."""
    head = b"POST /ingest/coocenter HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"Content-Type: application/json; charset=\xe9\xff\r\n"
    status, _ = await raw_post(daemon, head, b'{"event": "dialbegin"}')
    assert status == 400
    (entry,) = await held(daemon)
    shown = await daemon.quarantine.show(entry["id"])
    assert shown is not None
    assert shown["content_type"] == "application/json; charset=\\xe9\\xff"


async def test_kept_payloads_are_counted_per_source_with_their_retries(capped: Daemon) -> None:
    """`kept` counts every payload that ended in quarantine, a retry of a held one included."""
    await post(capped, broken(1), source="hq")
    await post(capped, broken(1), source="hq")
    await post(capped, broken(2), source="branch")
    assert capped.quarantine.kept == {"hq": 2, "branch": 1}
    assert capped.quarantine.full == {}


# -- the per-source cap -------------------------------------------------------------------


async def test_a_quarantine_full_by_count_answers_503_and_keeps_nothing(capped: Daemon) -> None:
    """Past quarantine_max_entries a new unreadable push is 503 quarantine_full, not stored."""
    for n in (1, 2):
        assert (await post(capped, broken(n), source="hq"))[0] == 400
    status, answer, headers = await push(capped, broken(3), source="hq")
    assert status == 503
    assert answer["error"] == "quarantine_full"
    assert answer["detail"].startswith("source 'hq' holds 2 entries / ")
    assert "(cap 2 entries / 67108864 bytes)" in answer["detail"]
    assert (answer["held_entries"], answer["max_entries"], answer["field"]) == (2, 2, "timestamp")
    assert int(headers["Retry-After"]) > 0
    assert [e["uniqueid"] for e in await stored_bodies(capped, "hq")] == [
        "1534993030.001",
        "1534993030.002",
    ]
    assert capped.quarantine.full == {"hq": 1}


async def stored_bodies(daemon: Daemon, source: str) -> list[dict[str, Any]]:
    found = []
    for entry in await held(daemon, source):
        shown = await daemon.quarantine.show(entry["id"])
        assert shown is not None
        found.append(json.loads(shown["body"]))
    return found


async def test_a_quarantine_full_by_bytes_answers_503_and_keeps_nothing(tmp_path: Path) -> None:
    """Bodies summing to quarantine_max_bytes fit exactly; one byte more is refused."""
    first, second, third = b"not json: 1", b"not json: 2", b"not json: 3"
    sources = [{"name": "hq", "vendor": "coocenter", "quarantine_max_bytes": 2 * len(first)}]
    async with Daemon(daemon_config(tmp_path / "data", sources=sources)) as daemon:
        assert (await post(daemon, first, source="hq"))[0] == 400
        assert (await post(daemon, second, source="hq"))[0] == 400
        status, answer, headers = await push(daemon, third, source="hq")
        assert status == 503
        assert answer["error"] == "quarantine_full"
        assert f"holds 2 entries / {2 * len(first)} bytes" in answer["detail"]
        assert answer["held_bytes"] == answer["max_bytes"] == 2 * len(first)
        assert "Retry-After" in headers
        assert [entry["size"] for entry in await held(daemon, "hq")] == [len(first)] * 2


async def test_a_retry_of_a_held_payload_is_counted_when_full(capped: Daemon) -> None:
    """The PBX retrying a payload already held gets its 400 again, and `seen` grows."""
    _, first = await post(capped, broken(1), source="hq")
    await post(capped, broken(2), source="hq")
    assert (await post(capped, broken(3), source="hq"))[0] == 503
    status, again = await post(capped, broken(1), source="hq")
    assert (status, again["quarantine_id"]) == (400, first["quarantine_id"])
    seen = {entry["id"]: entry["seen"] for entry in await held(capped, "hq")}
    assert seen[first["quarantine_id"]] == 2


async def test_the_cap_is_per_source(capped: Daemon) -> None:
    """One source's full quarantine does not stop another from keeping its payloads."""
    for n in (1, 2):
        await post(capped, broken(n), source="hq")
    assert (await post(capped, broken(3), source="hq"))[0] == 503
    status, answer = await post(capped, broken(3), source="branch")
    assert status == 400
    assert [e["id"] for e in await held(capped, "branch")] == [answer["quarantine_id"]]


def reads_only(uniqueid: str) -> Any:
    """A mapping fix for one payload: the rest still cannot be read."""

    def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
        if uniqueid.encode() not in payload.body:
            raise PayloadError("timestamp", "still not a time")
        return fixed_normalize(payload, ctx)

    return normalize


async def test_reprocessing_frees_room(capped: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry reprocessed no longer counts: the next unreadable push is kept again."""
    _, first = await post(capped, broken(1), source="hq")
    await post(capped, broken(2), source="hq")
    assert (await post(capped, broken(3), source="hq"))[0] == 503
    install(capped, reads_only("1534993030.001"), monkeypatch, source="hq")
    (result,) = await capped.quarantine.reprocess([first["quarantine_id"]])
    assert result["result"] == "reprocessed"
    status, answer = await post(capped, broken(3), source="hq")
    assert status == 400
    assert answer["quarantine_id"] in [e["id"] for e in await held(capped, "hq")]


async def test_quarantine_full_is_logged_first_and_then_every_thousandth(capped: Daemon) -> None:
    """A flood against a full quarantine logs two lines per 1000 refusals, not one each."""
    for n in (1, 2):
        await post(capped, broken(n), source="hq")
    error = PayloadError("", "body is not valid JSON")
    received = datetime.now(UTC)
    with capture_logs() as logs:
        for n in range(1000):
            payload = Payload(body=b"junk %d" % n, content_type="text/plain")
            with pytest.raises(QuarantineFullError):
                await capped.quarantine.keep(
                    source="hq",
                    vendor="coocenter",
                    payload=payload,
                    received_at=received,
                    error=error,
                )
    full = [line for line in logs if line["event"] == "quarantine_full"]
    assert [line["refused"] for line in full] == [1, 1000]
    assert capped.quarantine.full["hq"] == 1000


async def test_a_quarantine_full_again_after_room_was_freed_logs_again(
    capped: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a payload ends a run of refusals: the next refusal is a first one again."""
    _, first = await post(capped, broken(1), source="hq")
    await post(capped, broken(2), source="hq")
    with capture_logs() as logs:
        assert (await post(capped, broken(3), source="hq"))[0] == 503
        install(capped, reads_only("1534993030.001"), monkeypatch, source="hq")
        await capped.quarantine.reprocess([first["quarantine_id"]])
        assert (await post(capped, broken(3), source="hq"))[0] == 400
        assert (await post(capped, broken(4), source="hq"))[0] == 503
    full = [line["refused"] for line in logs if line["event"] == "quarantine_full"]
    assert full == [1, 1]


def test_a_full_quarantine_is_an_outbox_error() -> None:
    """Whoever answers 503 for an OutboxError already answers 503 for a full quarantine."""
    assert issubclass(QuarantineFullError, OutboxError)


@pytest.mark.parametrize("key", ["quarantine_max_entries", "quarantine_max_bytes"])
@pytest.mark.parametrize("value", [0, -1, "many", 1.5])
def test_quarantine_caps_are_positive_integers(key: str, value: object) -> None:
    """A cap that is no positive integer is refused, naming its key path."""
    raw = {"sources": [{"name": "a", "vendor": "coocenter"}, {"name": "b", "vendor": "coral"}]}
    raw["sources"][1][key] = value
    with pytest.raises(ConfigError) as caught:
        config.from_dict(raw)
    assert caught.value.path == f"sources[1].{key}"


def test_quarantine_caps_default_to_10000_entries_and_64_mib() -> None:
    """Without the keys a source may hold 10,000 entries and 64 MiB of bodies."""
    (source,) = config.from_dict({"sources": [{"name": "a", "vendor": "coocenter"}]}).sources
    assert (source.quarantine_max_entries, source.quarantine_max_bytes) == (10_000, 64 << 20)


def test_the_cap_is_read_from_an_index(tmp_path: Path) -> None:
    """Counting a source's held entries and bytes reads no row: a covering index answers."""
    conn = schema.connect(str(tmp_path / "o.sqlite3"))
    schema.migrate(conn)
    plan = conn.execute("EXPLAIN QUERY PLAN " + HELD_USAGE_SQL, ("hq",)).fetchall()
    assert "COVERING INDEX" in plan[0][3]


def test_entries_kept_before_the_upgrade_count_toward_the_cap(tmp_path: Path) -> None:
    """Migrating an older outbox records each held entry's body size."""
    path = str(tmp_path / "o.sqlite3")
    with sqlite3.connect(path) as conn:
        for script in schema.MIGRATIONS[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version=4")
        conn.execute(
            "INSERT INTO quarantine (digest, source, vendor, received_at, path, query,"
            " content_type, body, field, error) VALUES ('d', 'hq', 'coocenter', 0, '', '{}',"
            " '', x'00010203ff', '', 'not json')"
        )
    conn = schema.connect(path)
    schema.migrate(conn)
    assert conn.execute(HELD_USAGE_SQL, ("hq",)).fetchone() == (1, 5.0)


# -- the listing: every source's entries, realtime ones included --------------------------


async def test_cli_lists_realtime_entries_with_their_destination(daemon: Daemon) -> None:
    """A realtime source's entry (path: the STOMP destination) lists and shows like any other."""
    kept = await daemon.quarantine.keep(
        source="coocenter",
        vendor="coocenter",
        payload=Payload(body=b"\x00MESSAGE", content_type="text/plain", path="/topic/OC_778"),
        received_at=datetime.now(UTC),
        error=PayloadError("", "body is not valid JSON"),
    )
    out = io.StringIO()
    common = {"url": base_url(daemon), "token": None, "every": False, "state": "held", "out": out}
    assert await opscli.quarantine(action="list", ids=[], **common) == 0
    (line,) = [row for row in out.getvalue().splitlines() if row.startswith(f"{kept:>6}  ")]
    assert "/topic/OC_778" in line
    assert "(whole payload): body is not valid JSON" in line
    assert "coocenter: 1/10000 held" in out.getvalue()
    assert await opscli.quarantine(action="show", ids=[kept], **common) == 0
    assert '"path": "/topic/OC_778"' in out.getvalue()


async def test_the_listing_pages_through_every_entry(tmp_path: Path) -> None:
    """More entries than one page: the API says where to go on, the CLI lists them all."""
    sources = [{"name": "hq", "vendor": "coocenter"}, {"name": "coral", "vendor": "coral"}]
    config_ = daemon_config(tmp_path / "data", sources=sources, storage={"synchronous": "normal"})
    async with Daemon(config_) as daemon:
        error = PayloadError("", "body is not valid JSON")
        for n in range(1001):
            await daemon.quarantine.keep(
                source="hq" if n else "coral",
                vendor="coocenter",
                payload=Payload(body=b"junk %d" % n),
                received_at=datetime.now(UTC),
                error=error,
            )
        async with aiohttp.ClientSession() as http:
            url = base_url(daemon) + "/v1/quarantine?limit=1"
            async with http.get(url) as response:
                page = await response.json()
        assert len(page["entries"]) == 1
        assert page["next_after"] == page["entries"][0]["id"]
        assert page["sources"]["hq"]["held_entries"] == 1000
        out = io.StringIO()
        common = {"url": base_url(daemon), "token": None, "every": False, "out": out}
        assert await opscli.quarantine(action="list", ids=[], state="held", **common) == 0
        assert "1001 entries" in out.getvalue()


async def test_a_kept_realtime_message_is_reprocessed_with_the_stream_normaliser(
    tmp_path: Path,
) -> None:
    """A STOMP message kept from a realtime source reads with the vendor's stream normaliser on
    reprocess, not with its HTTP push normaliser (which would refuse it)."""
    config = daemon_config(
        tmp_path,
        sources=[
            {
                "name": "hq",
                "vendor": "coral",
                "realtime": {"url": "ws://127.0.0.1:9/ws", "destinations": ["/topic/OC_778"]},
            }
        ],
    )
    message = {
        "uuid": "5f0c2a8e-6b1d-4c44-9d0e-1a2b3c4d5e6f",
        "name": "Customer",
        "number": "09891612004",
        "state": "CHANNEL_PARK",
        "topic": "OC_778",
        "subTopic": "",
        "talkingToNumber": "",
    }
    async with Daemon(config) as daemon:
        kept = await daemon.quarantine.keep(
            source="hq",
            vendor="coral",
            payload=Payload(body=json.dumps(message).encode(), path="/topic/OC_778"),
            received_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
            error=PayloadError("", "a normaliser bug, since fixed"),
            channel="realtime",
        )
        (result,) = await daemon.quarantine.reprocess([kept])
        assert result["result"] == "reprocessed", result
        page = await daemon.reader.page(after=0, limit=10)
    assert [event.type for event in page.events] == ["call.initiated"]
