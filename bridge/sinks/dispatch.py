"""The webhook dispatcher as a state machine: no I/O, no clock, no ``await``.

Events read from the outbox and the outcomes of deliveries go in; out come the requests to send
now (:meth:`Dispatcher.poll`), how many events to read next (:meth:`Dispatcher.wants`), when to
be called again (:meth:`Dispatcher.next_wake`), and the rows to write with the cursor
(:meth:`Dispatcher.flush`). Every time is a caller-supplied wall-clock time in seconds.

The rules:

- **Per-call order.** Events of one call (same ``subject``) go out one at a time in ``seq``
  order; other calls overtake a call whose head waits for a retry. Only a call's head is ever in
  flight; the heads ready to go sit in a heap by due time.
- **The cursor** moves past an event only once it is settled: delivered, dead-lettered, expired,
  filtered out, or durably recorded (``waiting`` for a retry, or ``held`` behind its call's
  waiting head). Rows and cursor are written in one transaction, so a restart resumes from the
  store: what is recorded comes back from it (dead and expired rows are not sent again), and
  what was delivered past the cursor, behind an older event then in flight, is sent again.
- **The breaker.** ``threshold`` failures in a row open it: nothing is sent or read. A failure
  is an outcome the policy retries (network errors, timeouts, 408, 429, 5xx), even one that
  ends dead for want of retries; any other answer means the receiver is there. After the
  cool-down exactly one probe goes out: the head due soonest, even if its own retry is later,
  or a new event read for the purpose; only its answer decides. Its success closes the breaker
  and makes every waiting head due at once (the receiver is back), except where a
  ``Retry-After`` asked for longer.
- **Disable** (HTTP 410) is a row written with the next flush; nothing more is sent.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from bridge.events import type_matches
from bridge.sinks import policy
from bridge.sinks.items import (
    Disable,
    Flush,
    Forget,
    Item,
    Row,
    Rules,
    Send,
    Stats,
    Write,
)
from bridge.store.commit import Committed

CURSOR_FLUSH_S: Final = 0.02  # a cursor-only write waits this long for company
_DELIVERED: Final = policy.Decision(policy.Action.DELIVERED, reason="HTTP 2xx")


class Dispatcher:
    """One sink's delivery state."""

    def __init__(
        self,
        rules: Rules,
        *,
        rng: random.Random,
        cursor: int = 0,
        disabled: str | None = None,
        recorded: Iterable[Item] = (),
        finished: Iterable[int] = (),
        stats: Stats | None = None,
    ) -> None:
        self.rules = rules
        self._rng = rng
        cool_down = rules.breaker_cool_down_s
        self.breaker = policy.Breaker(
            threshold=rules.breaker_threshold, cool_down_s=cool_down, max_cool_down_s=cool_down * 10
        )
        self.cursor = self.read_pos = cursor
        self.disabled = disabled
        self.stats = stats or Stats()  # kept across restarts by the driver
        self.more = True  # there may be unread events in the outbox
        self.in_flight = 0
        self._calls: dict[str, deque[Item]] = {}
        self._busy: set[str] = set()  # calls whose head is in flight
        self._heap: list[tuple[float, int, str]] = []  # (due, seq, subject) of idle heads
        self._order: deque[int] = deque()  # unsettled seqs, in read order
        self._settled: set[int] = set()
        self._in_memory = 0
        self._writes: list[Write] = []
        self._saved_cursor = cursor
        self._flushed_at = float("-inf")
        # Per call, the newest seq restored: it and the call's older events are in memory or
        # finished, though the cursor may be below them (an older event was in flight).
        self._restored: dict[str, int] = {}
        # Dead or expired past the cursor (behind an older event in flight): not sent again.
        self._finished = set(finished)
        for item in recorded:  # durably recorded: settled, whatever the cursor
            self._add(item, settled=True)
            self._restored[item.subject] = max(item.seq, self._restored.get(item.subject, 0))

    # -- reading ---------------------------------------------------------------------------

    @property
    def in_memory(self) -> int:
        return self._in_memory

    def waiting(self) -> int:
        """Events that failed at least once and will be tried again (one may be in flight).

        A walk over what is in memory (``max_in_memory`` at most): for snapshots, not per event.
        """
        return sum(1 for calls in self._calls.values() for item in calls if item.attempts)

    def news(self) -> None:
        """New events were committed: there is more to read."""
        self.more = True

    def wants(self, now: float) -> int:
        """How many events to read now (0: none)."""
        if not self.more or self.disabled is not None:
            return 0
        room = self.rules.max_in_memory - self._in_memory
        state = self.breaker.state
        if state == "half_open" or room <= 0:
            return 0
        if state == "open":
            # The backlog stays in the outbox, but the probe may need an event to carry.
            probe_at = self.breaker.probe_at
            if probe_at is None or now < probe_at or self._peek() is not None:
                return 0
            return 1
        return min(room, 500)

    def offer(self, events: Sequence[Committed], next_after: int, *, asked: int) -> None:
        """A page read after ``read_pos``; ``next_after`` is where the next one starts."""
        sources = self.rules.sources
        for event in events:
            if sources and event.source.rsplit("/", 1)[-1] not in sources:
                continue  # never unsettled: the cursor passes it with the read position
            if event.seq <= self._restored.get(event.subject, 0):
                continue  # restored from the store, or finished before its call's restored head
            if self._finished and event.seq in self._finished:
                self._finished.discard(event.seq)
                continue
            self._add(Item.of(event))
        self.read_pos = max(self.read_pos, next_after)
        if len(events) < asked:
            self.more = False  # caught up: the next commit's news sets it again
        self._advance()

    def _add(self, item: Item, *, settled: bool = False) -> None:
        calls = self._calls.get(item.subject)
        if calls is None:
            calls = self._calls[item.subject] = deque()
        calls.append(item)
        self._in_memory += 1
        if len(calls) == 1:
            self._ready(item)
        if not settled:
            self._order.append(item.seq)
            head = calls[0]
            if head is not item and head.recorded and not item.recorded:
                self._record(item, "held")  # behind a waiting event: keep it across restarts

    def _ready(self, head: Item) -> None:
        heapq.heappush(self._heap, (head.due, head.seq, head.subject))

    def _peek(self) -> tuple[float, int, str] | None:
        """The idle head due soonest (stale heap entries are dropped on the way)."""
        heap = self._heap
        while heap:
            due, seq, subject = heap[0]
            calls = self._calls.get(subject)
            if calls and calls[0].seq == seq and calls[0].due == due and subject not in self._busy:
                return heap[0]
            heapq.heappop(heap)
        return None

    # -- sending ---------------------------------------------------------------------------

    def poll(self, now: float) -> list[Send]:
        """The requests to start now."""
        if self.disabled is not None:
            return []
        sends: list[Send] = []
        group: list[Item] = []
        rules = self.rules
        while self.in_flight + len(sends) < rules.concurrency:
            top = self._peek()
            if top is None:
                break
            due, _, subject = top
            head = self._calls[subject][0]
            if (due <= now or self.breaker.state != "closed") and self._expired(head, now):
                continue  # _finish dropped it from the heap and readied the call's next event
            probe = False
            if self.breaker.state != "closed":
                if group or sends:
                    break
                probe_at = self.breaker.probe_at
                if probe_at is None or now < probe_at or now < head.not_before:
                    break
                probe = self.breaker.allow(now)
                if not probe:
                    break
            elif due > now:
                break
            heapq.heappop(self._heap)
            self._busy.add(subject)
            group.append(head)
            if probe:
                self.stats.probes += 1
                sends.append(self._send(group, probe=True))
                group = []
                break
            if len(group) >= rules.batch_size:
                sends.append(self._send(group))
                group = []
        if group:
            sends.append(self._send(group))
        self.in_flight += len(sends)
        return sends

    def _send(self, items: list[Item], *, probe: bool = False) -> Send:
        if self.rules.batch_size == 1:
            (only,) = items
            return Send((only,), only.body, only.id, probe)
        body = b"[" + b",".join(item.body for item in items) + b"]"
        return Send(tuple(items), body, _batch_id([item.id for item in items]), probe)

    def _expired(self, head: Item, now: float) -> bool:
        limit = _expiry(self.rules.expire_s, head.type)
        if limit is None or now - _epoch(head.time) <= limit:
            return False
        self.stats.expired += 1
        self._finish(
            head, Row(head.seq, head.subject, "expired", head.attempts, 0.0, None, "expired")
        )
        return True

    # -- outcomes --------------------------------------------------------------------------

    def done(
        self,
        send: Send,
        now: float,
        *,
        status: int | None,
        error: BaseException | None,
        retry_after: str | None = None,
    ) -> policy.Decision:
        """A request ended: with a response ``status``, or with ``error``."""
        self.in_flight -= 1
        attempts = max(item.attempts for item in send.items) + 1
        if status is not None and 200 <= status <= 299 and self.breaker.state == "closed":
            # The common case, kept cheap: delivered, and nothing else to decide.
            self.breaker.record(True, now)
            for item in send.items:
                self._busy.discard(item.subject)
                item.attempts = attempts
                self._apply(item, _DELIVERED, status, now, 0.0)
            return _DELIVERED
        moment = datetime.fromtimestamp(now, UTC)
        decision = policy.classify(
            status=status,
            error=error,
            retry_after=retry_after,
            attempt=attempts,
            schedule=self.rules.schedule,
            rng=self._rng,
            now=moment,
        )
        was = self.breaker.state
        if send.probe or self.breaker.state != "half_open":
            # While the probe is out, only its answer decides (not one sent before opening).
            self.breaker.record(not policy.receiver_failed(status, error), now)
        asked = policy.retry_after_s(retry_after, moment) or 0.0
        for item in send.items:
            self._busy.discard(item.subject)
            item.attempts = attempts
            self._apply(item, decision, status, now, asked)
        if was != "closed" and self.breaker.state == "closed":
            self._receiver_back(now)
        return decision

    def _apply(
        self, item: Item, decision: policy.Decision, status: int | None, now: float, asked: float
    ) -> None:
        action = decision.action
        if action is policy.Action.DELIVERED:
            self.stats.delivered += 1
            if item.received_at:  # from the vendor's push to the receiver's 2xx
                self.stats.latency.observe(max(0.0, now - item.received_at))
            self._finish(item, Forget(item.seq) if item.recorded else None)
        elif action is policy.Action.RETRY:
            self.stats.retried += 1
            self.stats.last_error = decision.reason
            item.due = now + (decision.delay_s or 0.0)
            item.not_before = now + asked
            self._record(item, "waiting", status=status, error=decision.reason)
            for later in list(self._calls[item.subject])[1:]:
                if not later.recorded:
                    self._record(later, "held")
            self._ready(item)
        elif action is policy.Action.DEAD:
            self.stats.dead += 1
            self.stats.last_error = decision.reason
            row = Row(item.seq, item.subject, "dead", item.attempts, 0.0, status, decision.reason)
            self._finish(item, row)
        else:  # DISABLE: the receiver says this endpoint is gone (410)
            self.stats.last_error = decision.reason
            if self.disabled is None:
                self.disabled = decision.reason
                self._writes.append(Disable(decision.reason))
            self._ready(item)  # still the head: a replay starts again from the store anyway

    def _receiver_back(self, now: float) -> None:
        """The probe got through: waiting heads go now, not at their backoff slot."""
        for calls in self._calls.values():
            head = calls[0]
            if head.due > now and head.subject not in self._busy and head.not_before <= now:
                head.due = now
                self._ready(head)

    def _finish(self, item: Item, write: Write | None) -> None:
        """The event is finished with: delivered, dead or expired. Its call moves on."""
        calls = self._calls[item.subject]
        calls.popleft()
        self._in_memory -= 1
        if calls:
            self._ready(calls[0])
        else:
            del self._calls[item.subject]
        if write is not None:
            self._writes.append(write)
        if not item.recorded:  # a recorded one was settled then (or restored: never unsettled)
            self._settle(item.seq)

    def _record(
        self, item: Item, state: str, status: int | None = None, error: str | None = None
    ) -> None:
        self._writes.append(
            Row(item.seq, item.subject, state, item.attempts, item.due, status, error)
        )
        if not item.recorded:
            item.recorded = True
            self._settle(item.seq)

    # -- the cursor and the store ------------------------------------------------------------

    def _settle(self, seq: int) -> None:
        self._settled.add(seq)
        self._advance()

    def _advance(self) -> None:
        """The cursor: just below the oldest unsettled event, or the read position if none."""
        order, settled = self._order, self._settled
        while order and order[0] in settled:
            settled.discard(order.popleft())
        self.cursor = max(self.cursor, order[0] - 1 if order else self.read_pos)

    def flush(self, now: float, *, force: bool = False) -> Flush | None:
        """What to write now, if anything: rows at once, a cursor-only move after a moment.

        A busy sink so commits a few times a second rather than once per delivery; a crash in
        that window re-sends at most what was delivered in it.
        """
        if not self._writes:
            if self.cursor == self._saved_cursor:
                return None
            if not force and now < self._flushed_at + CURSOR_FLUSH_S:  # as next_wake has it
                return None
        writes, self._writes = tuple(self._writes), []
        return Flush(writes, self.cursor)

    def flushed(self, flush: Flush, now: float) -> None:
        self._saved_cursor = flush.cursor
        self._flushed_at = now

    def next_wake(self, now: float) -> float | None:
        """When to call ``poll`` and ``flush`` again at the latest (None: on news or outcomes)."""
        if self.wants(now):
            return now
        wake: float | None = None
        if self.cursor != self._saved_cursor and not self._writes:
            wake = self._flushed_at + CURSOR_FLUSH_S
        elif self._writes:
            wake = now
        if self.disabled is not None or self.in_flight >= self.rules.concurrency:
            return wake
        state = self.breaker.state
        top = self._peek()
        when: float | None = None
        if state == "closed":
            when = None if top is None else top[0]
        elif state == "open":
            probe_at = self.breaker.probe_at
            can_read = self.more and self._in_memory < self.rules.max_in_memory
            if probe_at is not None and (top is not None or can_read):
                head = None if top is None else self._calls[top[2]][0]
                when = max(probe_at, head.not_before if head is not None else probe_at)
        if when is not None:
            wake = when if wake is None else min(wake, when)
        return wake


def _batch_id(ids: list[str]) -> str:
    """A webhook-id for a batch: the same events, the same id (receivers may dedup on it)."""
    return "batch_" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def _expiry(limits: Mapping[str, float], kind: str) -> float | None:
    for pattern, limit in limits.items():
        if type_matches(kind, (pattern,)):
            return limit
    return None


def _epoch(event_time: str) -> float:
    return datetime.fromisoformat(event_time).timestamp()
