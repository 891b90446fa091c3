"""Every vendor's realistic calls, delivered in every order with duplicates, through the writer's
own transactions on a real SQLite file: the same final call record and the same derived events.

Within the settle window (everything arrives before it passes) the derived events are exactly
those of in-order delivery. Beyond it (the window passes between deliveries) a call.missed may
go out early; then evidence revokes it, and the final record is the same all the same.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import calls
from bridge.events import Event, decode
from bridge.store import schema
from bridge.store.commit import commit, settle_due
from tests.scenarios import Scenario, every

SCENARIOS = every()
SOURCES = {f"/{s.events[0].vendor}/hq" for s in SCENARIOS}
WINDOW_S = 10.0
# Fields of a call record that tell how it arrived, not what the call was.
ARRIVAL = {"seqs", "first_seq", "last_seq", "late_events", "folded_events", "missed_pending"}
DECISION = {"missed_decided_by", "missed_revoked"}


@contextmanager
def outbox() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory() as folder:
        conn = schema.connect(str(Path(folder) / "outbox.sqlite3"))
        schema.migrate(conn)
        try:
            yield conn
        finally:
            conn.close()


class Outbox:
    """The writer's transactions on one connection, with a clock the test moves."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seq = 1
        self.committed: list[Event] = []
        self.final: dict[str, Any] = {}  # the call record once every delivery has settled

    def submit(self, events: Sequence[Event], *, now: float) -> None:
        windows = dict.fromkeys(SOURCES, WINDOW_S)
        (added,), _ = commit(self.conn, [events], next_seq=self.seq, now=now, settle_s=windows)
        self._took(added)

    def settle(self, *, now: float) -> None:
        added, _ = settle_due(self.conn, next_seq=self.seq, now=now)
        self._took(added)

    def _took(self, added: list[Any]) -> None:
        if added:
            self.seq = added[-1].seq + 1
        self.committed.extend(decode(c.body) for c in added)

    def record(self) -> dict[str, Any]:
        (body,) = self.conn.execute("SELECT record FROM calls").fetchone()
        public = calls.public(calls.decode(body), first_seq=None, last_seq=None)
        return {key: value for key, value in public.items() if key not in ARRIVAL}

    def derived(self) -> Counter[tuple[str, str]]:
        kinds = ("call.ended", "call.missed", "call.missed_revoked")
        return Counter((e.type, e.id) for e in self.committed if e.type in kinds)

    def types(self) -> Counter[str]:
        return Counter(e.type for e in self.committed if e.type.startswith("call."))


def deliver(conn: sqlite3.Connection, order: Sequence[Event], *, gap_s: float) -> Outbox:
    """One event per transaction, ``gap_s`` apart; what falls due settles in between."""
    box = Outbox(conn)
    for n, event in enumerate(order):
        box.submit([event], now=n * gap_s)
        box.settle(now=n * gap_s + gap_s / 2)
    box.settle(now=1e9)
    box.final = box.record()
    return box


def in_order(scenario: Scenario) -> Outbox:
    with outbox() as conn:
        return deliver(conn, scenario.events, gap_s=0.01)


REFERENCE = {id(s): in_order(s) for s in SCENARIOS}


def deliveries(scenario: Scenario) -> st.SearchStrategy[list[Event]]:
    """The scenario's events in any order, some of them delivered more than once."""
    events = list(scenario.events)
    again = st.lists(st.sampled_from(events), max_size=len(events))
    return st.tuples(st.permutations(events), again, st.randoms()).map(
        lambda parts: _mixed(parts[0], parts[1], parts[2])
    )


def _mixed(order: list[Event], repeats: list[Event], rng: Any) -> list[Event]:
    out = list(order)
    for event in repeats:
        out.insert(rng.randint(0, len(out)), event)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.vendor}-{s.name}")
def test_in_order_delivery_tells_the_truth(scenario: Scenario) -> None:
    """The reference itself: answered calls are not missed, missed ones are, exactly once."""
    box = REFERENCE[id(scenario)]
    record = box.final
    assert record["answered"] is scenario.answered
    assert record["missed"] is scenario.missed
    assert box.types()["call.ended"] == 1
    assert box.types()["call.missed"] == int(scenario.missed)
    assert box.types()["call.missed_revoked"] == 0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.vendor}-{s.name}")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_order_within_the_window_gives_the_same_call(
    scenario: Scenario, data: st.DataObject
) -> None:
    """Delivered shuffled and duplicated before the window passes: the same record and events."""
    reference = REFERENCE[id(scenario)]
    with outbox() as conn:
        box = deliver(conn, data.draw(deliveries(scenario)), gap_s=0.01)
        assert box.final == reference.final
        assert box.derived() == reference.derived()
        assert box.types() == reference.types()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.vendor}-{s.name}")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_order_beyond_the_window_revokes_what_went_out_early(
    scenario: Scenario, data: st.DataObject
) -> None:
    """The window passes between deliveries: an early miss is revoked, the record is the same."""
    reference = REFERENCE[id(scenario)]
    with outbox() as conn:
        box = deliver(conn, data.draw(deliveries(scenario)), gap_s=100.0)
        record, expected = box.final, reference.final
        assert {k: v for k, v in record.items() if k not in DECISION} == {
            k: v for k, v in expected.items() if k not in DECISION
        }
        types = box.types()
        # Each miss after the first follows a revocation; the last word is the truth.
        assert types["call.missed"] - types["call.missed_revoked"] == int(scenario.missed)
        assert types["call.ended"] == 1
        kinds = [e.type for e in box.committed if e.type.startswith("call.missed")]
        assert all(a != b for a, b in itertools.pairwise(kinds))
