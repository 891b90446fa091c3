"""What a webhook dispatcher holds, sends and writes: plain values, no behaviour.

:class:`Rules` come from a sink's config; an :class:`Item` is one event on its way; a
:class:`Send` is one request; :class:`Row`, :class:`Forget` and :class:`Disable` are the
delivery-state writes a :class:`Flush` carries to the store with the cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.histogram import DELIVERY_S, Histogram
from bridge.sinks import policy
from bridge.store.commit import Committed


@dataclass(frozen=True, slots=True)
class Rules:
    """What a sink's config says about dispatching."""

    concurrency: int = 4
    batch_size: int = 1
    max_in_memory: int = 10_000
    schedule: tuple[float, ...] = policy.DEFAULT_SCHEDULE_S
    expire_s: Mapping[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # source names to deliver; empty: all
    breaker_threshold: int = 5
    breaker_cool_down_s: float = 30.0


@dataclass(slots=True)
class Item:
    """One event on its way to the receiver."""

    seq: int
    subject: str
    type: str
    id: str
    time: str
    body: bytes
    attempts: int = 0
    received_at: float = 0.0  # when the bridge received the event (epoch s)
    due: float = 0.0  # wall-clock time of its next attempt
    not_before: float = 0.0  # a Retry-After the receiver asked for
    recorded: bool = False  # in ``deliveries`` (waiting or held)

    @classmethod
    def of(cls, event: Committed) -> Item:
        return cls(
            event.seq,
            event.subject,
            event.type,
            event.id,
            event.time,
            event.body,
            received_at=event.received_at,
        )


@dataclass(frozen=True, slots=True)
class Send:
    """One request to make now: one event, or a batch of heads of different calls."""

    items: tuple[Item, ...]
    body: bytes
    msg_id: str
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """Upsert this delivery row."""

    seq: int
    subject: str
    state: str  # waiting, held, dead, expired
    attempts: int
    due: float
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete this delivery row (its event was delivered after all)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Disable:
    reason: str


Write = Row | Forget | Disable


@dataclass(frozen=True, slots=True)
class Flush:
    """Write these rows, then the cursor, in one transaction; then call ``flushed``."""

    writes: tuple[Write, ...]
    cursor: int


@dataclass(slots=True)
class Stats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    probes: int = 0
    last_error: str | None = None
    # Seconds from an event's time to the receiver's 2xx, per event delivered.
    latency: Histogram = field(default_factory=lambda: Histogram(DELIVERY_S))
