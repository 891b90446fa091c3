"""The webhook dispatcher, from literal events and a fake clock: no I/O, no receiver."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sinks.dispatch import Dispatcher
from bridge.sinks.items import Disable, Flush, Forget, Item, Row, Rules, Send, Write
from bridge.sinks.policy import Action
from bridge.store.commit import Committed

T = "2026-12-01T10:00:00+00:00"
E = datetime.fromisoformat(T).timestamp()  # T as a clock reading


def ev(
    seq: int, subject: str = "A", kind: str = "call.started", at: float = E, src: str = "a"
) -> Committed:
    time = datetime.fromtimestamp(at, UTC).isoformat()
    return Committed(seq, kind, f"pbx/{src}", subject, b'{"seq":%d}' % seq, f"evt_{seq}", time)


def stored(seq: int, subject: str, *, due: float = 0.0, attempts: int = 0) -> Item:
    """An item as ``deliveries.load`` returns it after a restart."""
    item = Item(seq, subject, "call.started", f"evt_{seq}", T, b'{"seq":%d}' % seq, attempts)
    item.due, item.recorded = due, True
    return item


def make(*recorded: Item, cursor: int = 0, **rules: Any) -> Dispatcher:
    """A dispatcher with these rules, or one restarted from these stored items and cursor."""
    return Dispatcher(Rules(**rules), rng=random.Random(0), cursor=cursor, recorded=recorded)


def feed(d: Dispatcher, *events: Committed, more: bool = False) -> None:
    """A page holding ``events``; ``more``: it was full, so there may be more to read."""
    last = max([d.read_pos, *(e.seq for e in events)])
    d.offer(list(events), last, asked=len(events) + (0 if more else 1))


def seqs(sends: list[Send]) -> list[list[int]]:
    return [[item.seq for item in send.items] for send in sends]


def end(d: Dispatcher, sends: list[Send], now: float, status: int) -> None:
    for send in sends:
        d.done(send, now, status=status, error=None)


def flush(d: Dispatcher, now: float, *, force: bool = False) -> Flush | None:
    out = d.flush(now, force=force)
    if out is not None:
        d.flushed(out, now)
    return out


def written(d: Dispatcher, now: float) -> tuple[Write, ...]:
    out = flush(d, now)
    assert out is not None
    return out.writes


def run(d: Dispatcher, now: float, status: int = 200) -> list[list[int]]:
    """Send what is due at ``now``; every request ends with ``status``."""
    sends = d.poll(now)
    end(d, sends, now, status)
    return seqs(sends)


def opened(schedule: tuple[float, ...] = (0.0, 3600.0, 3600.0)) -> Dispatcher:
    """Two calls failed at 0 with ``breaker_threshold`` 2: the breaker is open until 30."""
    d = make(breaker_threshold=2, schedule=schedule)
    feed(d, ev(1, "A"), ev(2, "B"), more=True)
    assert run(d, 0.0, 503) == [[1], [2]]
    assert d.breaker.state == "open"
    flush(d, 0.0)
    return d


# -- per-call order ------------------------------------------------------------------------
def test_one_event_of_a_call_in_flight() -> None:
    """A call's second event is not sent until its first has an outcome."""
    d = make()
    feed(d, ev(1), ev(2))
    first = d.poll(0.0)
    assert (seqs(first), d.poll(0.0)) == ([[1]], [])
    end(d, first, 0.0, 200)
    assert seqs(d.poll(0.0)) == [[2]]


def test_other_calls_overtake_a_waiting_head() -> None:
    """While a call's head waits for its retry, other calls go; the call's tail does not."""
    d = make(schedule=(0.0, 10.0))
    feed(d, ev(1, "A"), ev(2, "A"))
    assert run(d, 0.0, 503) == [[1]]
    feed(d, ev(3, "B"))
    assert run(d, 1.0) == [[3]]
    assert run(d, 12.0) == [[1]]
    assert run(d, 12.0) == [[2]]


def test_concurrency_caps_sends_in_flight() -> None:
    """No more than ``concurrency`` requests are out at once."""
    d = make(concurrency=2)
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "C"), ev(4, "D"))
    first = d.poll(0.0)
    assert (seqs(first), d.poll(0.0)) == ([[1], [2]], [])
    end(d, first[:1], 0.0, 200)
    assert seqs(d.poll(0.0)) == [[3]]


def test_batch_groups_heads_of_different_calls() -> None:
    """A batch holds one head per call, as a JSON array, under an id fixed by its events."""
    d, other = make(batch_size=3), make(batch_size=3)
    feed(d, ev(1, "A"), ev(2, "A"), ev(3, "B"), ev(4, "C"))
    feed(other, ev(1, "A"), ev(3, "B"))
    (send,) = d.poll(0.0)
    assert seqs([send]) == [[1, 3, 4]]
    assert json.loads(send.body) == [{"seq": 1}, {"seq": 3}, {"seq": 4}]
    # The same events give the same id in any process, so a receiver can dedup a re-sent batch.
    assert send.msg_id == "batch_94631eec97b8c466f33c7daaaa099b38" != other.poll(0.0)[0].msg_id
    end(d, [send], 0.0, 200)
    assert seqs(d.poll(0.0)) == [[2]]


# -- retries -------------------------------------------------------------------------------
def test_503_waits_for_the_schedule_and_holds_the_call() -> None:
    """A 503 records the head waiting at now + schedule +- 20 % and its call's tail held."""
    d = make(schedule=(0.0, 10.0, 20.0))
    feed(d, ev(1, "A"), ev(2, "A"))
    run(d, 100.0, 503)
    waiting, held = written(d, 100.0)
    assert isinstance(waiting, Row)
    assert 108.0 <= waiting.due <= 112.0
    assert waiting == Row(1, "A", "waiting", 1, waiting.due, 503, "HTTP 503")
    assert (held, d.cursor) == (Row(2, "A", "held", 0, 0.0), 2)
    assert d.poll(waiting.due - 0.001) == []
    assert seqs(d.poll(waiting.due)) == [[1]]


def test_retry_after_longer_than_the_schedule_is_honoured() -> None:
    """Retry-After 120 s delays the head past its slot, even when the breaker closes early."""
    d = make(breaker_threshold=2, schedule=(0.0, 10.0))
    feed(d, ev(1, "A"), ev(2, "B"))
    a, b = d.poll(0.0)
    d.done(a, 0.0, status=503, error=None, retry_after="120")
    d.done(b, 0.0, status=503, error=None)
    assert run(d, 30.0) == [[2]]  # the probe
    assert d.breaker.state == "closed"
    assert d.poll(30.0) == d.poll(119.9) == []
    assert seqs(d.poll(120.0)) == [[1]]


@pytest.mark.parametrize(
    ("status", "attempts"), [(400, 1), (404, 1), (422, 1), (301, 1), (308, 1), (503, 3)]
)
def test_dead_letters(status: int, attempts: int) -> None:
    """4xx (not 408/429/410), redirects and exhausted retries are dead; the call goes on."""
    d = make(schedule=(0.0, 1.0, 1.0))
    feed(d, ev(1, "A"), ev(2, "A"))
    for attempt in range(attempts):
        flush(d, 2.0 * attempt)
        assert run(d, 2.0 * attempt, status) == [[1]]
    (dead,) = written(d, 2.0 * attempts)
    assert isinstance(dead, Row)
    assert (dead.seq, dead.state, dead.attempts, dead.status) == (1, "dead", attempts, status)
    assert seqs(d.poll(2.0 * attempts)) == [[2]]


def test_delivered_after_a_retry_is_forgotten() -> None:
    """An event delivered on a later attempt has its row deleted and leaves nothing behind."""
    d = make(schedule=(0.0, 1.0, 1.0))
    feed(d, ev(1))
    run(d, 0.0, 503)
    flush(d, 0.0)
    run(d, 2.0)
    assert flush(d, 2.0) == Flush((Forget(1),), 1)
    assert d._settled == set()  # a seq per retried event, kept forever, was a leak


# -- the cursor ----------------------------------------------------------------------------
def test_cursor_waits_for_an_event_in_flight() -> None:
    """The cursor stays below an event in flight, however many later ones are delivered."""
    d = make()
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "C"))
    a, b, c = d.poll(0.0)
    end(d, [b, c], 0.0, 200)
    assert d.cursor == 0
    end(d, [a], 0.0, 200)
    assert d.cursor == 3


def test_cursor_passes_filtered_and_recorded_events() -> None:
    """Events of other sources and events recorded as waiting or held do not hold it back."""
    d = make(sources=("a",), schedule=(0.0, 10.0))
    feed(d, ev(1, "A"), ev(2, "A"), ev(3, "B", src="b"))
    assert d.cursor == 0
    assert run(d, 0.0, 503) == [[1]]
    assert d.cursor == 3
    d.offer([ev(4, "C", src="b")], 4, asked=2)
    assert (d.cursor, seqs(d.poll(20.0))) == (4, [[1]])


def test_cursor_only_change_waits_rows_do_not() -> None:
    """A cursor-only move is written CURSOR_FLUSH_S after the last flush; rows go at once."""
    d = make(schedule=(0.0, 10.0))
    feed(d, ev(1, "A"), ev(2, "B"))
    a, b = d.poll(E)
    end(d, [a], E, 503)
    assert flush(d, E) == Flush((Row(1, "A", "waiting", 1, a.items[0].due, 503, "HTTP 503"),), 1)
    end(d, [b], E + 0.005, 200)
    assert d.flush(E + 0.005) is None
    wake = d.next_wake(E + 0.005)
    assert wake == pytest.approx(E + 0.02, abs=1e-6)
    assert flush(d, wake) == Flush((), 2)  # at the very time next_wake named, not a hair later
    feed(d, ev(3, "C"))
    run(d, wake, 400)
    assert flush(d, wake) is not None


def test_forced_flush_writes_the_cursor_at_once() -> None:
    """flush(force=True) writes a pending cursor move now, and nothing when nothing changed."""
    d = make()
    feed(d, ev(1, "A"), ev(2, "B"))
    a, b = d.poll(0.0)
    end(d, [a], 0.0, 200)
    assert flush(d, 0.0) == Flush((), 1)
    end(d, [b], 0.001, 200)
    assert d.flush(0.001) is None
    assert flush(d, 0.001, force=True) == Flush((), 2)
    assert d.flush(0.002, force=True) is None


# -- restart -------------------------------------------------------------------------------
def test_restart_resumes_recorded_items_in_order() -> None:
    """Waiting and held items from the store go first, in order; reading starts at the cursor."""
    d = make(stored(1, "A", due=50.0), stored(2, "A"), cursor=2)
    assert (d.read_pos, d.cursor, d.in_memory) == (2, 2, 2)
    feed(d, ev(3, "A"), ev(4, "B"))
    assert run(d, 0.0) == [[4]]
    assert [run(d, 50.0), run(d, 50.0), run(d, 50.0)] == [[[1]], [[2]], [[3]]]
    assert {Forget(1), Forget(2), Forget(3)} <= set(written(d, 50.0))
    assert d.cursor == 4


def test_restart_does_not_read_in_again_what_the_store_holds() -> None:
    """An event recorded above the cursor, or one its call finished before it, is not resent."""
    # Before the crash: 1 was in flight (the cursor stayed at 0), 2 delivered, 3 failed.
    d = make(stored(3, "B", due=10.0, attempts=1))
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "B"))
    assert run(d, 10.0) == [[1], [3]]
    assert d.poll(10.0) == []
    assert (d.in_memory, d.cursor) == (0, 3)


# -- the breaker ---------------------------------------------------------------------------
def test_open_breaker_sends_and_reads_nothing() -> None:
    """After ``breaker_threshold`` failures nothing is sent and the backlog stays unread."""
    d = make(breaker_threshold=2, concurrency=2)
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "C"), more=True)
    run(d, 0.0, 503)
    assert d.breaker.state == "open"
    assert (d.poll(0.0), d.wants(0.0), d.wants(29.9)) == ([], 0, 0)


def test_open_breaker_wakes_at_the_probe_time_not_before() -> None:
    """With a retry due but the breaker open, next_wake is the probe time, never now (no spin)."""
    d = opened(schedule=(0.0, 5.0))
    for now in (0.0, 1.0, 5.0, 7.0, 12.0, 29.99):
        assert (d.poll(now), flush(d, now), d.next_wake(now)) == ([], None, 30.0)


def test_probe_goes_at_the_probe_time_alone() -> None:
    """At the probe time one send goes out as the probe, though its own retry is an hour away."""
    d = opened()
    assert d.poll(29.9) == []
    (probe,) = d.poll(30.0)
    assert probe.probe
    assert (d.poll(30.0), d.stats.probes) == ([], 1)


def test_probe_can_be_a_new_event() -> None:
    """With nothing in memory at the probe time, wants() asks for 1 event to carry the probe."""
    d = make(breaker_threshold=1, expire_s={"call.*": 20.0})
    feed(d, ev(1, "A"), more=True)
    run(d, E, 503)
    assert d.wants(E + 29.0) == 0
    assert d.poll(E + 30.0) == []  # 1 expired while the breaker was open
    assert (d.in_memory, d.wants(E + 30.0)) == (0, 1)
    d.offer([ev(2, "B", at=E + 30.0)], 2, asked=1)
    (probe,) = d.poll(E + 30.0)
    assert (probe.probe, seqs([probe])) == (True, [[2]])


def test_probe_success_makes_waiting_heads_due_now() -> None:
    """The probe's success closes the breaker and every waiting head goes at once."""
    d = opened()
    probe = run(d, 30.0)
    assert d.breaker.state == "closed"
    assert sorted(probe + seqs(d.poll(30.0))) == [[1], [2]]


def test_probe_failure_doubles_the_cool_down() -> None:
    """A failed probe re-opens the breaker for twice the cool-down."""
    d = opened()
    run(d, 30.0, 503)
    flush(d, 30.0)
    assert (d.breaker.state, d.next_wake(30.0), d.poll(89.9)) == ("open", 90.0, [])
    assert d.poll(90.0)[0].probe


def test_only_the_probe_answers_for_the_receiver_while_it_is_out() -> None:
    """A request sent before the breaker opened, ending while the probe is out, decides nothing."""
    d = make(breaker_threshold=1, concurrency=2, schedule=(0.0, 3600.0, 3600.0))
    feed(d, ev(1, "A"), ev(2, "B"), more=True)
    early, late = d.poll(0.0)
    d.done(early, 0.0, status=503, error=None)  # opens it: probe at 30
    (probe,) = d.poll(30.0)
    d.done(late, 30.0, status=200, error=None)  # the old request: not the probe's answer
    assert d.breaker.state == "half_open"
    d.done(probe, 30.0, status=503, error=None)
    assert d.breaker.state == "open"


def test_dead_letters_past_the_cursor_are_not_sent_again_after_a_restart() -> None:
    """Dead behind an older event in flight: a restart reads it again but does not send it."""
    restarted = Dispatcher(Rules(), rng=random.Random(0), cursor=0, finished=[2])
    feed(restarted, ev(1, "A"), ev(2, "B"), ev(3, "B"))
    assert seqs(restarted.poll(0.0)) == [[1], [3]]
    assert restarted.cursor == 0  # 1 and 3 are in flight


def test_probe_failing_on_its_last_attempt_keeps_the_breaker_open() -> None:
    """A 503 that dead-letters the probe (no retries left) is still a failed probe."""
    d = opened(schedule=(0.0, 10.0))
    assert len(run(d, 30.0, 503)) == 1
    assert (d.breaker.state, d.poll(30.0)) == ("open", [])


def test_failures_with_no_retries_count_towards_the_breaker() -> None:
    """With a one-attempt schedule, 503s still open the breaker."""
    d = make(breaker_threshold=2, concurrency=2, schedule=(0.0,))
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "C"))
    run(d, 0.0, 503)
    assert (d.breaker.state, d.poll(0.0)) == ("open", [])


def test_open_breaker_with_memory_full_does_not_spin() -> None:
    """At the probe time, with memory full of tails of calls in flight, next_wake is not now."""
    d = make(breaker_threshold=1, concurrency=2, max_in_memory=3, expire_s={"call.*": 20.0})
    feed(d, ev(1, "A"), ev(2, "A"), ev(3, "B"), more=True)
    _, b = d.poll(E)
    end(d, [b], E, 503)
    now = E + 30.0
    assert (d.poll(now), d.wants(now)) == ([], 1)  # 3 expired; 1 is still in flight
    d.offer([ev(4, "A", at=now)], 4, asked=1)
    flush(d, now)
    assert (d.wants(now), d.poll(now)) == (0, [])
    wake = d.next_wake(now)
    assert wake is None or wake > now


# -- 410, expiry, memory -------------------------------------------------------------------
def test_410_disables_once_and_goes_idle() -> None:
    """410 writes one Disable; then nothing is sent or read and there is nothing to wake for."""
    d = make(concurrency=2)
    feed(d, ev(1, "A"), ev(2, "B"), ev(3, "C"), more=True)
    run(d, 0.0, 410)
    assert [w for w in written(d, 0.0) if isinstance(w, Disable)] == [Disable(d.disabled or "")]
    assert d.cursor == 0
    d.news()
    assert (d.poll(1.0), d.wants(1.0), d.next_wake(1.0), d.next_wake(999.0)) == ([], 0, None, None)


def test_expired_event_is_written_not_sent() -> None:
    """An event older than its type's expire_s is recorded expired; its call's next goes on."""
    d = make(expire_s={"call.ringing": 60.0})
    feed(d, ev(1, "A", "call.ringing"), ev(2, "A", "call.ended"), ev(3, "B", "call.ringing", E + 1))
    assert seqs(d.poll(E + 61.0)) == [[2], [3]]  # 3 is exactly 60 s old: still on time
    assert flush(d, E + 61.0) == Flush((Row(1, "A", "expired", 0, 0.0, None, "expired"),), 1)
    assert d.stats.expired == 1


def test_wants_never_exceeds_the_memory_bound() -> None:
    """wants() asks for at most max_in_memory minus what is held, restored items included."""
    d = make(max_in_memory=3)
    assert d.wants(0.0) == 3
    feed(d, ev(1, "A"), ev(2, "A"), more=True)
    assert d.wants(0.0) == 1
    feed(d, ev(3, "A"), more=True)
    assert d.wants(0.0) == 0
    run(d, 0.0)
    assert (d.wants(0.0), make().wants(0.0)) == (1, 500)
    assert make(stored(1, "A"), stored(2, "B"), max_in_memory=3).wants(0.0) == 1


# -- property: any outcomes, then a healthy receiver ----------------------------------------
class Harness:
    """The driver loop of ``WebhookSink.run`` over an in-memory outbox and delivery store."""

    def __init__(self, rules: Rules) -> None:
        self.d, self.now, self.saved = Dispatcher(rules, rng=random.Random(0)), E, 0
        self.outbox: list[Committed] = []
        self.flying: list[Send] = []
        self.ends: dict[int, list[str]] = {}  # seq: delivered, dead, expired or filtered
        self.delivered: dict[str, list[int]] = {}  # subject: seqs in delivery order
        self.rows: dict[int, str] = {}  # the deliveries table, seq: state

    def commit(self, subject: str, kind: str, src: str) -> None:
        self.outbox.append(ev(len(self.outbox) + 1, subject, kind, self.now, src))
        self.ends[len(self.outbox)] = [] if src == "a" else ["filtered"]
        self.d.news()

    def finish(self, send: Send, outcome: int | str) -> None:
        self.flying.remove(send)
        status, error = (None, TimeoutError()) if isinstance(outcome, str) else (outcome, None)
        retry_after = "7" if outcome == 429 else None
        decision = self.d.done(send, self.now, status=status, error=error, retry_after=retry_after)
        for item in send.items if decision.action is Action.DELIVERED else ():
            self.ends[item.seq].append("delivered")
            self.delivered.setdefault(item.subject, []).append(item.seq)

    def turn(self) -> bool:
        """One pass of the loop: read, send, write. Whether it did anything."""
        d, before, busy = self.d, self.d.cursor, False
        if asked := d.wants(self.now):
            page = [e for e in self.outbox if e.seq > d.read_pos][:asked]
            d.offer(page, page[-1].seq if len(page) == asked else len(self.outbox), asked=asked)
            busy = True
        for send in d.poll(self.now):
            subjects = [item.subject for s in (*self.flying, send) for item in s.items]
            assert len(set(subjects)) == len(subjects)  # one event per call in flight
            assert not any(self.ends[item.seq] for item in send.items)
            self.flying.append(send)
            busy = True
        assert len(self.flying) <= d.rules.concurrency
        if (out := flush(d, self.now)) is not None:
            self.store(out)
            busy = True
        assert d.cursor >= before
        return busy

    def store(self, out: Flush) -> None:
        for write in out.writes:
            if isinstance(write, Row):
                self.rows[write.seq] = write.state
                if write.state in ("dead", "expired"):
                    self.ends[write.seq].append(write.state)
            elif isinstance(write, Forget):
                del self.rows[write.seq]
        assert out.cursor >= self.saved
        self.saved = out.cursor
        for seq in range(1, out.cursor + 1):  # durably settled, or durably recorded
            assert self.ends[seq] or self.rows.get(seq) in ("waiting", "held"), seq

    def settle(self) -> float | None:
        """Turn until next_wake is in the future; a wake-up for now must do something."""
        woken = False
        for _ in range(200):
            busy = self.turn()
            assert busy or not woken, "next_wake said now, but there was nothing to do"
            wake = self.d.next_wake(self.now)
            if wake is None or wake > self.now:
                return wake
            woken = True
        raise AssertionError("the loop never rests")


FUZZ: dict[str, Any] = {"schedule": (0.0, 1.0, 5.0), "expire_s": {"call.ringing": 30.0}}
FUZZ |= {"sources": ("a",), "breaker_threshold": 2, "breaker_cool_down_s": 10.0}


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(2, 6), st.data())
def test_any_run_delivers_everything_once_in_order(
    concurrency: int, batch: int, memory: int, data: st.DataObject
) -> None:
    """Whatever the receiver did, once healthy every event ends once, in order per call."""
    h = Harness(Rules(concurrency=concurrency, batch_size=batch, max_in_memory=memory, **FUZZ))
    for _ in range(data.draw(st.integers(0, 40))):
        step = data.draw(st.sampled_from(["commit", "commit", "finish", "finish", "sleep"]))
        if step == "commit":
            kind = data.draw(st.sampled_from(["call.ringing", "call.ended"]))
            h.commit(data.draw(st.sampled_from("ABC")), kind, data.draw(st.sampled_from("aab")))
        elif step == "finish" and h.flying:
            outcome = data.draw(st.sampled_from([200, 503, 400, 429, "timeout"]))
            h.finish(data.draw(st.sampled_from(h.flying)), outcome)
        elif step == "sleep":
            h.now += data.draw(st.sampled_from([0.01, 1.0, 10.0, 40.0]))
        wake = h.settle()
        if step == "sleep" and wake is not None and data.draw(st.booleans()):
            h.now = wake
    for _ in range(500):  # the receiver is healthy from here on
        for send in list(h.flying):
            h.finish(send, 200)
        wake = h.settle()
        if wake is None and not h.flying:
            break
        h.now = max(h.now, wake or h.now)
    else:
        raise AssertionError("delivery never finished")
    assert {seq: len(ends) for seq, ends in h.ends.items()} == {e.seq: 1 for e in h.outbox}
    assert all(order == sorted(order) for order in h.delivered.values())
    assert not [seq for seq, state in h.rows.items() if state in ("waiting", "held")]
    assert (h.saved, h.d.in_memory) == (len(h.outbox), 0)
