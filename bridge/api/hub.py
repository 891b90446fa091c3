"""Fan-out of committed events to live subscribers, with bounded memory per subscriber.

Each subscriber gets a bounded buffer. When a slow subscriber's buffer would overflow it is not
grown and events are not skipped: the buffer is dropped and the subscriber is told to catch up
from the outbox by ``seq`` (see :func:`bridge.api.follow.follow`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from bridge.store.commit import Committed


class Subscription:
    """One subscriber's bounded buffer of live events."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[Committed] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.overflows = 0
        self.high_water = 0

    def push(self, items: Sequence[Committed]) -> None:
        if self.overflowed:
            return
        if len(self._items) + len(items) > self._limit:
            self.overflowed = True
            self.overflows += 1
            self._items.clear()
        else:
            self._items.extend(items)
            self.high_water = max(self.high_water, len(self._items))
        self._ready.set()

    @property
    def pending(self) -> bool:
        """Something was published since the last ``get`` or ``reset``."""
        return self._ready.is_set() or bool(self._items) or self.overflowed

    def reset(self) -> None:
        """Start buffering afresh (before a catch-up read)."""
        self.overflowed = False
        self._items.clear()
        self._ready.clear()

    async def get(self) -> list[Committed] | None:
        """The buffered events, waiting for some; ``None`` means: overflowed, catch up."""
        await self._ready.wait()
        self._ready.clear()
        if self.overflowed:
            return None
        items = list(self._items)
        self._items.clear()
        return items


class Hub:
    """Hands every committed batch to every live subscription."""

    def __init__(self, *, client_queue: int) -> None:
        self._client_queue = client_queue
        self._subscriptions: set[Subscription] = set()
        self._bells: set[Callable[[], None]] = set()
        self.overflows = 0  # of subscriptions that have ended; live ones are added on read

    def publish(self, items: Sequence[Committed]) -> None:
        for subscription in self._subscriptions:
            subscription.push(items)
        for ring in self._bells:
            ring()

    @contextmanager
    def bell(self, ring: Callable[[], None]) -> Iterator[None]:
        """Call ``ring`` on every commit, with no buffer: for readers of the outbox (sinks).

        Not a subscriber: it holds no events and is not counted.
        """
        self._bells.add(ring)
        try:
            yield
        finally:
            self._bells.discard(ring)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription(self._client_queue)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self.overflows += subscription.overflows

    @property
    def total_overflows(self) -> int:
        return self.overflows + sum(s.overflows for s in self._subscriptions)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
