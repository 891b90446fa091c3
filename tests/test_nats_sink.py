"""The NATS JetStream sink against a real nats-server: every event in the stream once per id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from bridge.app import Daemon
from bridge.sinks.nats import NatsSink, subject_for
from tests import natsserver
from tests.conftest import base_url, daemon_config, until
from tests.natsserver import NatsServer

nats_server = natsserver.nats_server  # the fixture: a private nats-server per test

SOURCES = [
    {"name": "coocenter", "vendor": "coocenter"},
    {"name": "branch", "vendor": "coocenter"},
]


def sink(server: NatsServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": "bus",
        "type": "nats",
        "servers": [server.url],
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.2,
        **extra,
    }


def start(tmp_path: Path, *sinks: dict[str, Any], **overrides: Any) -> Daemon:
    config = daemon_config(tmp_path / "data", sources=SOURCES, sinks=list(sinks), **overrides)
    return Daemon(config)


def dial(call: str, t: float) -> dict[str, Any]:
    """A CooCenter dialbegin: call.initiated + call.ringing."""
    return {
        "event": "dialbegin",
        "timestamp": str(t),
        "channel": "DAHDI/i1/18782985586-51",
        "calleridnum": "18782985586",
        "destcalleridnum": "801",
        "destuniqueid": f"{call}.801",
        "uniqueid": call,
    }


def status(n: int) -> dict[str, Any]:
    """A CooCenter extensionstatus: one extension.state."""
    return {"event": "extensionstatus", "exten": str(800 + n), "status": "0", "statustext": "Idle"}


async def push(daemon: Daemon, *payloads: dict[str, Any], source: str = "coocenter") -> None:
    async with aiohttp.ClientSession() as http:
        for payload in payloads:
            url = f"{base_url(daemon)}/ingest/{source}"
            async with http.post(url, json=payload) as response:
                assert response.status == 200


def bus(daemon: Daemon) -> NatsSink:
    sink: NatsSink = daemon.sinks[0]
    return sink


async def caught_up(daemon: Daemon) -> None:
    """Until the sink's cursor is at the outbox head: every event before it is acked."""
    await until(lambda: bus(daemon).cursor == daemon.writer.last_seq, what="the cursor at head")


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A JetStream client of the test's own, to look at what the stream holds."""
    client: Client = await nats.connect(nats_server.url, reconnect_time_wait=0.05)
    yield client.jetstream()
    await client.close()


async def messages(js: JetStreamContext, stream: str = "PBX") -> list[RawStreamMsg]:
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    return [await js.get_msg(stream, seq) for seq in range(first, last + 1)] if last else []


async def stored(daemon: Daemon) -> list[dict[str, Any]]:
    page = await daemon.reader.page(after=0, limit=10_000)
    return [json.loads(event.body) for event in page.events]


async def test_every_event_lands_once_as_its_cloudevent(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """Each committed event is one stream message whose payload is the stored CloudEvent."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, *(dial(f"c{n}", 1_700_000_000 + n) for n in range(5)), status(1))
        await caught_up(daemon)
        events = await stored(daemon)
    in_stream = await messages(js)
    assert len(events) == 11
    assert [json.loads(msg.data or b"") for msg in in_stream] == events


async def test_subjects_are_prefix_vendor_type(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """Subjects are <prefix>.<vendor>.<type>, the type's dot a separator of its own."""
    async with start(tmp_path, sink(nats_server, subject_prefix="acme")) as daemon:
        await push(daemon, dial("c1", 1_700_000_000), status(1))
        await caught_up(daemon)
    subjects = [msg.subject for msg in await messages(js)]
    assert subjects == [
        "acme.coocenter.call.initiated",
        "acme.coocenter.call.ringing",
        "acme.coocenter.extension.state",
    ]


def test_subject_tokens_cannot_break_the_subject() -> None:
    """Wildcards, spaces and empty parts in a vendor or type become plain tokens."""
    assert subject_for("pbx", "my vendor", "call.*.>") == "pbx.my_vendor.call._._"
    assert subject_for("pbx", "", "a..b") == "pbx._.a._.b"


async def test_headers_carry_the_id_for_deduplication(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """Nats-Msg-Id and ce-id are the event id; ce-type and ce-source its attributes."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, status(1))
        await caught_up(daemon)
        (event,) = await stored(daemon)
    (msg,) = await messages(js)
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == msg.headers["ce-id"] == event["id"]
    assert msg.headers["ce-type"] == "extension.state"
    assert msg.headers["ce-source"] == event["source"] == "/coocenter/coocenter"
    assert msg.headers["ce-specversion"] == "1.0"


async def test_the_stream_is_created_with_a_duplicate_window(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """A missing stream is created on <prefix>.> with a two-minute duplicate window."""
    async with start(tmp_path, sink(nats_server, stream="CALLS")) as daemon:
        await push(daemon, status(1))
        await caught_up(daemon)
    info = await js.stream_info("CALLS")
    assert info.config.subjects == ["pbx.>"]
    assert info.config.duplicate_window == 120.0
    assert info.state.messages == 1


async def test_without_create_stream_the_sink_waits_for_the_stream(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """create_stream off and no stream: publishes fail, the cursor stays until it exists."""
    async with start(tmp_path, sink(nats_server, create_stream=False)) as daemon:
        await push(daemon, status(1), status(2))
        await until(lambda: bus(daemon).retries > 0, what="a failed publish")
        assert bus(daemon).cursor == 0
        assert "NoStreamResponse" in (bus(daemon).last_error or "")
        await js.add_stream(name="PBX", subjects=["pbx.>"])
        await caught_up(daemon)
    assert (await js.stream_info("PBX")).state.messages == 2


async def test_a_replay_adds_nothing_to_the_stream(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """replay(1) publishes everything again; JetStream drops every id it already has."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, *(dial(f"c{n}", 1_700_000_000 + n) for n in range(5)))
        await caught_up(daemon)
        await bus(daemon).replay(1)
        assert bus(daemon).cursor == 0
        await until(lambda: bus(daemon).duplicates == 10, what="the replayed publishes acked")
        await caught_up(daemon)
    assert (await js.stream_info("PBX")).state.messages == 10


async def test_the_cursor_waits_for_acks_while_the_server_is_down(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """With the server stopped the cursor stays; once it is back everything arrives, once."""
    async with start(tmp_path, sink(nats_server, ack_timeout_s=0.5)) as daemon:
        await push(daemon, status(1))
        await caught_up(daemon)
        before = bus(daemon).cursor
        await nats_server.stop()
        await push(daemon, *(dial(f"c{n}", 1_700_000_000 + n) for n in range(5)))
        await until(lambda: bus(daemon).retries > 0, what="a failed publish")
        assert bus(daemon).last_error is not None
        assert bus(daemon).cursor == before
        await nats_server.start()
        await caught_up(daemon)
        ids = [event["id"] for event in await stored(daemon)]
    in_stream = await messages(js)
    assert sorted(msg.headers["Nats-Msg-Id"] for msg in in_stream if msg.headers) == sorted(ids)


async def test_a_server_restart_is_survived(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """After the server restarts, the sink reconnects by itself and goes on publishing."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, status(1))
        await caught_up(daemon)
        await nats_server.restart()
        await push(daemon, status(2), status(3))
        await caught_up(daemon)
    assert (await js.stream_info("PBX")).state.messages == 3


async def test_a_restarted_daemon_resumes_from_its_cursor(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """The cursor is durable: a new daemon on the same outbox publishes only what is new."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, status(1), status(2))
        await caught_up(daemon)
    async with start(tmp_path, sink(nats_server)) as daemon:
        await until(lambda: bus(daemon).cursor == 2, what="the stored cursor")
        await push(daemon, status(3))
        await caught_up(daemon)
        assert bus(daemon).published == 1


async def test_the_type_filter_applies(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """Only events whose type matches a pattern are published; the cursor passes the rest."""
    async with start(tmp_path, sink(nats_server, types=["call.ringing"])) as daemon:
        await push(daemon, dial("c1", 1_700_000_000), status(1), dial("c2", 1_700_000_001))
        await caught_up(daemon)
    assert [msg.subject for msg in await messages(js)] == ["pbx.coocenter.call.ringing"] * 2


async def test_the_source_filter_applies(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext
) -> None:
    """Only events from the named sources are published."""
    async with start(tmp_path, sink(nats_server, sources=["branch"])) as daemon:
        await push(daemon, status(1), status(2))
        await push(daemon, status(3), source="branch")
        await caught_up(daemon)
    (msg,) = await messages(js)
    assert json.loads(msg.data or b"")["source"] == "/coocenter/branch"


async def test_a_live_buffer_overflow_is_caught_up_from_the_outbox(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """More events per commit than the sink's live buffer holds: it reads them from the outbox."""
    async with start(tmp_path, sink(nats_server), api={"client_queue": 1}) as daemon:
        for n in range(3):  # two events per commit: every one overflows the buffer of one
            await push(daemon, dial(f"c{n}", 1_700_000_000 + n))
            await caught_up(daemon)
        assert bus(daemon).published == 6


async def test_snapshot_reports_progress(tmp_path: Path, nats_server: NatsServer) -> None:
    """/v1/sinks' view: cursor, lag against the head, published count, connected."""
    async with start(tmp_path, sink(nats_server)) as daemon:
        await push(daemon, status(1), status(2))
        await caught_up(daemon)
        snapshot = bus(daemon).snapshot(head=5)
    assert snapshot == {
        "name": "bus",
        "type": "nats",
        "stream": "PBX",
        "cursor": 2,
        "lag": 3,
        "published": 2,
        "duplicates": 0,
        "retries": 0,
        "last_error": None,
        "connected": True,
        "state": "running",
    }
