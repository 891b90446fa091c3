"""Subscribers: catch-up from SQLite, then live from the hub, never skipping, bounded memory."""

from __future__ import annotations

import asyncio

from bridge.api.follow import follow
from bridge.api.hub import Hub
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from tests.conftest import call_event, other_event


async def collect(stream: object, count: int) -> list[int]:
    seqs: list[int] = []
    async with asyncio.timeout(10):
        async for batch in stream:  # type: ignore[attr-defined]
            seqs.extend(c.seq for c in batch)
            if len(seqs) >= count:
                return seqs
    return seqs


async def test_catch_up_then_live_without_gap_or_duplicate(
    writer: Writer, reader: Reader, hub: Hub
) -> None:
    """History and live events join seamlessly at the seam."""
    await writer.submit([other_event(n) for n in range(10)])
    stream = follow(hub, reader, after=3)
    first = await collect(stream, 7)
    await writer.submit([other_event(n) for n in range(10, 15)])
    rest = await collect(stream, 5)
    await stream.aclose()
    assert first + rest == list(range(4, 16))


async def test_slow_subscriber_falls_back_to_catch_up(
    writer: Writer, reader: Reader, hub: Hub
) -> None:
    """A subscriber that stops reading overflows its bounded buffer, then still gets everything."""
    stream = follow(hub, reader, after=0)
    await writer.submit([other_event(0)])
    assert await collect(stream, 1) == [1]
    (subscription,) = hub._subscriptions  # the buffer we are about to overflow
    for start in range(1, 500, 50):  # 500 events while the subscriber does not read
        await writer.submit([other_event(n) for n in range(start, start + 50)])
    assert subscription.overflowed
    assert subscription.high_water <= 64  # the hub's client_queue: memory stayed bounded
    seqs = await collect(stream, 500)
    await stream.aclose()
    assert seqs == list(range(2, 502))


async def test_type_filter_applies_to_history_and_live(
    writer: Writer, reader: Reader, hub: Hub
) -> None:
    """``call.*`` selects call events from both the outbox and the live feed."""
    await writer.submit([other_event(1), call_event("call.initiated"), other_event(2)])
    stream = follow(hub, reader, after=0, types=("call.*",))
    assert await collect(stream, 1) == [2]
    await writer.submit([other_event(3), call_event("call.ringing", n=1)])
    assert await collect(stream, 1) == [5]
    await stream.aclose()


async def test_idle_stream_yields_keepalives(writer: Writer, reader: Reader, hub: Hub) -> None:
    """With idle_s set, a quiet stream yields empty batches so the caller can keep-alive."""
    stream = follow(hub, reader, after=0, idle_s=0.01)
    async with asyncio.timeout(5):
        assert await anext(stream) == []
    await stream.aclose()


async def test_closed_stream_unsubscribes(writer: Writer, reader: Reader, hub: Hub) -> None:
    """Closing a stream releases its subscription."""
    stream = follow(hub, reader, after=0)
    await writer.submit([other_event(1)])
    await collect(stream, 1)
    assert hub.subscribers == 1
    await stream.aclose()
    assert hub.subscribers == 0
