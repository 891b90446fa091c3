"""The outbox writer against a real SQLite file: dedup, atomic batches, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

from bridge.api.hub import Hub
from bridge.config import StorageConfig
from bridge.errors import OutboxError, OverloadedError
from bridge.events import decode
from bridge.store import schema
from bridge.store.commit import LOAD_CALLS_SQL, Committed
from bridge.store.writer import Writer
from tests.conftest import call_event, other_event


def rows(
    storage: StorageConfig, sql: str = "SELECT seq, id, type FROM events ORDER BY seq"
) -> list[tuple[object, ...]]:
    with sqlite3.connect(storage.path) as conn:
        return conn.execute(sql).fetchall()


async def test_committed_events_get_consecutive_seqs(
    writer: Writer, storage: StorageConfig
) -> None:
    """Every committed event carries its outbox seq, consecutive from 1."""
    committed = await writer.submit([other_event(n) for n in range(5)])
    assert [c.seq for c in committed] == [1, 2, 3, 4, 5]
    assert [decode(c.body).seq for c in committed] == [1, 2, 3, 4, 5]
    assert [r[0] for r in rows(storage)] == [1, 2, 3, 4, 5]


async def test_duplicates_within_a_batch_are_committed_once(
    writer: Writer, storage: StorageConfig
) -> None:
    """The same event twice in one request is stored once."""
    event = other_event(1)
    committed = await writer.submit([event, event])
    assert len(committed) == 1
    assert len(rows(storage)) == 1


async def test_duplicates_across_batches_are_committed_once(
    writer: Writer, storage: StorageConfig
) -> None:
    """A vendor retransmission in a later batch is acknowledged but not stored again."""
    await writer.submit([other_event(1), other_event(2)])
    again = await writer.submit([other_event(2), other_event(3)])
    assert [decode(c.body).data["extension"] for c in again] == ["3"]
    assert [r[0] for r in rows(storage)] == [1, 2, 3]


async def test_concurrent_duplicates_are_committed_once(
    writer: Writer, storage: StorageConfig
) -> None:
    """Retransmissions racing each other into one group commit still dedup."""
    results = await asyncio.gather(*(writer.submit([other_event(7)]) for _ in range(20)))
    assert sum(len(r) for r in results) == 1
    assert len(rows(storage)) == 1


async def test_call_state_is_updated_in_the_same_transaction(
    writer: Writer, storage: StorageConfig
) -> None:
    """The calls row reflects what was committed, with first and last seq."""
    await writer.submit(
        [call_event("call.initiated", direction="inbound"), call_event("call.ringing", n=1)]
    )
    await writer.submit([call_event("call.ended", n=2)])
    types = [r[2] for r in rows(storage)]
    assert types == ["call.initiated", "call.ringing", "call.ended", "call.missed"]
    (call,) = rows(
        storage, "SELECT state, answered, direction, missed, first_seq, last_seq FROM calls"
    )
    assert call == (3, 0, "inbound", 1, 1, 4)


async def test_commit_failure_writes_nothing_and_fails_every_waiter(
    writer: Writer, storage: StorageConfig
) -> None:
    """A failing commit rolls back the whole batch: no half-written request, OutboxError to all."""
    with sqlite3.connect(storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.subject = 'extension/13'"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    results = await asyncio.gather(
        writer.submit([other_event(12)]),
        writer.submit([other_event(13)]),
        return_exceptions=True,
    )
    assert all(isinstance(r, OutboxError) for r in results)
    assert rows(storage) == []
    with sqlite3.connect(storage.path) as conn:
        conn.execute("DROP TRIGGER poison")
    committed = await writer.submit([other_event(12), other_event(13)])
    assert [c.seq for c in committed] == [1, 2]  # no seq was burnt by the failed batch


async def test_commit_failure_does_not_advance_call_state(
    writer: Writer, storage: StorageConfig
) -> None:
    """A rolled-back call event leaves the call as it was, so its retry is applied in full."""
    with sqlite3.connect(storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.type = 'call.missed'"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    await writer.submit([call_event("call.initiated", direction="inbound")])
    with pytest.raises(OutboxError):
        await writer.submit([call_event("call.ended", n=1)])
    with sqlite3.connect(storage.path) as conn:
        conn.execute("DROP TRIGGER poison")
    await writer.submit([call_event("call.ended", n=1)])
    assert [r[2] for r in rows(storage)] == ["call.initiated", "call.ended", "call.missed"]


async def test_seq_continues_after_restart(storage: StorageConfig) -> None:
    """A reopened outbox continues numbering after its newest event."""
    hub = Hub(client_queue=8)
    async with Writer(storage, hub.publish) as writer:
        await writer.submit([other_event(1), other_event(2)])
    async with Writer(storage, hub.publish) as writer:
        assert writer.last_seq == 2
        committed = await writer.submit([other_event(1), other_event(3)])
    assert [c.seq for c in committed] == [3]


async def test_committed_events_are_published_in_order(storage: StorageConfig) -> None:
    """The hub receives exactly the new events, after commit, in seq order."""
    published: list[Committed] = []
    async with Writer(storage, published.extend) as writer:
        await asyncio.gather(*(writer.submit([other_event(n), other_event(n)]) for n in range(30)))
    assert [c.seq for c in published] == list(range(1, 31))


async def test_overload_is_refused_not_queued(storage: StorageConfig) -> None:
    """Past max_pending events the writer refuses at once instead of growing memory."""
    tight = msgspec.structs.replace(storage, max_pending=3)
    async with Writer(tight, lambda _: None) as writer:
        with pytest.raises(OverloadedError):
            await writer.submit([other_event(n) for n in range(4)])


async def test_shutdown_drains_submitted_events(storage: StorageConfig) -> None:
    """Events submitted before shutdown are committed, not dropped."""
    async with Writer(storage, lambda _: None) as writer:
        pending = [asyncio.ensure_future(writer.submit([other_event(n)])) for n in range(50)]
        await asyncio.sleep(0)  # let the submits enqueue before the writer closes
    results = await asyncio.gather(*pending)
    assert sum(len(r) for r in results) == 50
    assert len(rows(storage)) == 50


async def test_prune_deletes_old_events_but_keeps_the_newest(
    writer: Writer, storage: StorageConfig
) -> None:
    """Retention removes expired events in batches and never the row that holds max(seq)."""
    await writer.submit([other_event(n) for n in range(5)])
    deleted = await writer.prune(now=10**12)
    assert deleted == 4
    assert [r[0] for r in rows(storage)] == [5]


def test_call_state_lookup_uses_the_primary_key(tmp_path: Path) -> None:
    """Loading call state per batch is an index search, not a scan of every call kept."""
    conn = schema.connect(str(tmp_path / "o.sqlite3"))
    schema.migrate(conn)
    sql = LOAD_CALLS_SQL.format(marks="?,?")
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("/x/y", "call/1", "call/2")).fetchall()
    conn.close()
    assert "SCAN" not in " ".join(str(row) for row in plan)
