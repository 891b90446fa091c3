"""One subscriber's stream: catch up from the outbox, then follow the hub, never skipping.

The subscription is opened *before* the first read: anything committed after the read is then
in the buffer, anything before it is in the read, and overlap is dropped by ``seq``. When the
buffer overflows (a slow client) or a gap shows, the subscriber falls back to reading pages
from SQLite at its own pace, so memory stays bounded and nothing is silently missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from bridge.api.hub import Hub
from bridge.events import type_matches
from bridge.store.commit import Committed
from bridge.store.reader import Reader

PAGE_SIZE = 500


async def follow(
    hub: Hub,
    reader: Reader,
    *,
    after: int,
    types: tuple[str, ...] = (),
    idle_s: float | None = None,
) -> AsyncGenerator[list[Committed], None]:
    """Batches of committed events with ``seq > after`` matching ``types``, in order, forever.

    With ``idle_s``, an empty batch is yielded after that long without events (keep-alives).
    """
    last = after
    with hub.subscribe() as subscription:
        while True:
            subscription.reset()
            while True:  # catch up
                page = await reader.page(after=last, limit=PAGE_SIZE, types=types)
                last = page.next_after
                if page.events:
                    yield page.events
                if len(page.events) < PAGE_SIZE:
                    break
            while True:  # live
                try:
                    items = await asyncio.wait_for(subscription.get(), idle_s)
                except TimeoutError:
                    yield []
                    continue
                if items is None:
                    break  # overflowed: catch up from the outbox
                fresh = [item for item in items if item.seq > last]
                if not fresh:
                    continue
                if fresh[0].seq != last + 1:
                    break  # a gap (cannot normally happen): catch up rather than skip
                last = fresh[-1].seq
                wanted = [item for item in fresh if type_matches(item.type, types)]
                if wanted:
                    yield wanted
