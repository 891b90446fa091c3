"""The outbox writer against a real SQLite file: dedup, atomic batches, restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from bridge import calls
from bridge.api.hub import Hub
from bridge.config import StorageConfig
from bridge.errors import OutboxError, OverloadedError
from bridge.events import decode
from bridge.store import schema
from bridge.store.commit import DUE_CALLS_SQL, LOAD_CALLS_SQL, Committed
from bridge.store.writer import Writer
from tests.conftest import call_event, other_event, until


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


# The test events' source: call_event() makes them for source "hq" of vendor "test".
SOURCE = "/test/hq"


@pytest.fixture
async def decisive(storage: StorageConfig, hub: Hub) -> AsyncIterator[Writer]:
    """A writer whose missed-call settle window is 0: a miss is decided with the end."""
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.0}) as running:
        yield running


async def test_call_state_is_updated_in_the_same_transaction(
    decisive: Writer, storage: StorageConfig
) -> None:
    """The calls row reflects what was committed, with first and last seq."""
    await decisive.submit(
        [call_event("call.initiated", direction="inbound"), call_event("call.ringing", n=1)]
    )
    await decisive.submit([call_event("call.ended", n=2)])
    types = [r[2] for r in rows(storage)]
    assert types == ["call.initiated", "call.ringing", "call.ended", "call.missed"]
    (call,) = rows(storage, "SELECT state, missed, first_seq, last_seq, missed_due_at FROM calls")
    assert call == (3, 1, 1, 4, None)


async def test_settle_window_decides_the_miss_later_in_its_own_commit(
    storage: StorageConfig, hub: Hub
) -> None:
    """With a window, the end commits alone; the miss follows when the window has passed."""
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.2}) as writer:
        await writer.submit([call_event("call.initiated", direction="inbound")])
        await writer.submit([call_event("call.ended", n=1)])
        assert [r[2] for r in rows(storage)] == ["call.initiated", "call.ended"]
        (due,) = rows(storage, "SELECT missed_due_at FROM calls")[0]
        assert due is not None
        await until(lambda: len(rows(storage)) == 3, what="the settled miss")
    assert [r[2] for r in rows(storage)][-1] == "call.missed"
    assert rows(storage, "SELECT missed, missed_due_at FROM calls") == [(1, None)]
    assert writer.tally.missed == 1


async def test_an_answer_inside_the_window_cancels_the_miss(
    storage: StorageConfig, hub: Hub
) -> None:
    """PortSIP's call_ended before call_established: the late answer wins, nothing is missed."""
    async with Writer(storage, hub.publish, settle_s={SOURCE: 3600.0}) as writer:
        await writer.submit([call_event("call.initiated", direction="inbound")])
        await writer.submit([call_event("call.ended", n=1)])
        await writer.submit([call_event("call.answered", n=2, target="108")])
        assert writer.tally.late == 1
    assert rows(storage, "SELECT state, missed, missed_due_at FROM calls") == [(3, 0, None)]
    ((body,),) = rows(storage, "SELECT record FROM calls")
    assert calls.decode(body).answered


async def test_a_pending_miss_survives_a_restart_and_is_said_once(
    storage: StorageConfig, hub: Hub
) -> None:
    """The decision lives in the calls row: a writer reopened after the due time says it once."""
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.3}) as writer:
        await writer.submit([call_event("call.initiated", direction="inbound")])
        await writer.submit([call_event("call.ended", n=1)])
    assert [r[2] for r in rows(storage)] == ["call.initiated", "call.ended"]
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.3}) as writer:
        await until(lambda: len(rows(storage)) == 3, what="the miss after the restart")
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.3}) as writer:
        await writer.submit([call_event("call.ended", n=1)])  # a retransmission, later
    assert [r[2] for r in rows(storage)] == ["call.initiated", "call.ended", "call.missed"]


async def test_the_fold_counts_what_it_absorbed(decisive: Writer) -> None:
    """Duplicates, late and folded events are counted for /metrics."""
    await decisive.submit([call_event("call.initiated", direction="outbound")])
    await decisive.submit([call_event("call.ended", n=1), call_event("call.ended", n=2)])
    await decisive.submit([call_event("call.ringing", n=3), call_event("call.ringing", n=3)])
    tally = decisive.tally
    assert (tally.duplicates, tally.folded, tally.late) == (1, 1, 1)


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
    decisive: Writer, storage: StorageConfig
) -> None:
    """A rolled-back call event leaves the call as it was, so its retry is applied in full."""
    with sqlite3.connect(storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.type = 'call.missed'"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    await decisive.submit([call_event("call.initiated", direction="inbound")])
    with pytest.raises(OutboxError):
        await decisive.submit([call_event("call.ended", n=1)])
    with sqlite3.connect(storage.path) as conn:
        conn.execute("DROP TRIGGER poison")
    await decisive.submit([call_event("call.ended", n=1)])
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


def test_due_misses_are_found_by_index(tmp_path: Path) -> None:
    """Finding the misses that fall due is an index search, whatever the number of calls."""
    conn = schema.connect(str(tmp_path / "o.sqlite3"))
    schema.migrate(conn)
    plan = conn.execute(f"EXPLAIN QUERY PLAN {DUE_CALLS_SQL}", (1.0, 10)).fetchall()
    conn.close()
    assert "calls_missed_due_at" in " ".join(str(row) for row in plan)


async def test_call_rows_from_before_the_fold_keep_their_story(
    storage: StorageConfig, hub: Hub
) -> None:
    """A call row written by schema 3 (no record) still ends once and is missed once."""
    schema3_with_a_call(storage, state=1)
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.0}) as writer:
        added = await writer.submit([call_event("call.ended", n=5)])
        again = await writer.submit([call_event("call.ended", n=6)])
    assert [decode(c.body).type for c in added] == ["call.ended", "call.missed"]
    assert again == []


async def test_a_late_record_for_a_forgotten_call_does_not_repeat_its_derived_events(
    decisive: Writer, storage: StorageConfig
) -> None:
    """A CDR after the call's row expired derives the end and the miss again: already stored,
    they are skipped rather than failing the batch (which the PBX would retry forever)."""
    await decisive.submit([call_event("call.initiated", direction="inbound")])
    await decisive.submit([call_event("call.ended", n=1)])
    await decisive.transact(lambda conn: conn.execute("DELETE FROM calls"))
    added = await decisive.submit([call_event("call.completed", n=2, disposition="no_answer")])
    assert [decode(c.body).type for c in added] == ["call.completed"]
    types = [r[2] for r in rows(storage)]
    assert types == ["call.initiated", "call.ended", "call.missed", "call.completed"]


def test_the_next_due_time_and_the_missed_list_use_their_indexes(tmp_path: Path) -> None:
    """The writer's next-due lookup and the calls API's missed list search, never scan."""
    from bridge.store.commit import NEXT_DUE_SQL
    from bridge.store.reader import CallQuery, _call_page

    conn = schema.connect(str(tmp_path / "o.sqlite3"))
    schema.migrate(conn)
    plans = [" ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {NEXT_DUE_SQL}"))]
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    _call_page(conn, CallQuery(limit=10, missed=True))
    conn.set_trace_callback(None)
    plans.append(" ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {traced[-1]}")))
    conn.close()
    assert "calls_missed_due_at" in plans[0]
    assert "calls_missed_last_seq" in plans[1]


async def test_an_ended_call_row_from_before_the_fold_is_not_decided_again(
    storage: StorageConfig, hub: Hub
) -> None:
    """A schema-3 row that ended (answered or judged then) gets no new miss from a late event."""
    schema3_with_a_call(storage, state=3)
    async with Writer(storage, hub.publish, settle_s={SOURCE: 0.0}) as writer:
        added = await writer.submit([call_event("call.ringing_ended", n=7)])
    assert [decode(c.body).type for c in added] == ["call.ringing_ended"]
    assert decode(added[0].body).data["late"] is True


def schema3_with_a_call(storage: StorageConfig, *, state: int) -> None:
    """An outbox of schema 3 (before the fold) holding one unanswered inbound call's row."""
    os.makedirs(storage.data_dir)
    conn = schema.connect(str(storage.path))
    conn.executescript(schema.MIGRATIONS[0] + schema.MIGRATIONS[1] + schema.MIGRATIONS[2])
    conn.execute("PRAGMA user_version=3")
    conn.execute(
        "INSERT INTO calls (source, subject, state, answered, direction, missed, first_seq,"
        " last_seq, updated_at) VALUES (?, 'call/c1', ?, 0, 'inbound', 0, 1, 1, 1700000000)",
        (SOURCE, state),
    )
    conn.close()
