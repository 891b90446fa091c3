"""The realtime phase's publisher: ``python -m bench.stomp_server --port 0 --messages N``.

The simulator's :class:`RealtimeServer` (the same STOMP-over-WebSocket code the tests use), on
127.0.0.1. JSON lines out: ``{"event": "listening", "port", "url"}``, then ``{"event":
"subscribed"}`` once a client subscribes to ``/topic/OC_778``, then it publishes N messages as
fast as ``publish()`` goes, one WebSocket frame each, and prints ``{"event": "published",
"start_ns", "end_ns", ...}`` (``time.monotonic_ns``, one clock for every process). It then
stays until SIGTERM or SIGINT, so the subscriber is never cut off while it drains.

Every message is a new leg parked in the queue (a distinct uuid, ``CHANNEL_PARK``): exactly one
``call.initiated`` event each, so messages/s are events/s.

With ``--gated`` it waits for SIGUSR1 after the subscription before publishing: the
orchestrator first takes its CPU and ``last_seq`` readings, so the daemon's start-up and
connect are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from bench.load import HOST, run_loop
from bridge.simulate.coral_realtime import RealtimeServer

GROUP: Final = "778"
DESTINATION: Final = f"/topic/OC_{GROUP}"


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def message(index: int) -> dict[str, Any]:
    """A parked inbound leg, shaped like the simulator's streams (bridge.simulate.coral_streams)."""
    return {
        "uuid": str(uuid.UUID(int=index + 1, version=4)),  # distinct per index, UUIDv4-shaped
        "name": "Customer",
        "number": f"09{index % 10**9:09d}",
        "state": "CHANNEL_PARK",
        "topic": f"OC_{GROUP}",
        "subTopic": "",
        "talkingToNumber": "",
    }


async def _play(server: RealtimeServer, messages: int, go: asyncio.Event | None) -> None:
    bodies = [message(index) for index in range(messages)]  # built before the clock starts
    await server.subscribed.wait()
    _emit(event="subscribed")
    if go is not None:
        await go.wait()
    cpu0 = time.process_time()
    start = time.monotonic_ns()
    delivered = 0
    for body in bodies:
        delivered += await server.publish(DESTINATION, body)
    end = time.monotonic_ns()
    _emit(
        event="published",
        messages=messages,
        delivered=delivered,
        start_ns=start,
        end_ns=end,
        cpu_s=time.process_time() - cpu0,
    )


async def serve(port: int, messages: int, *, gated: bool) -> None:
    loop = asyncio.get_running_loop()
    stop, go = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    async with RealtimeServer(host=HOST, port=port) as server:
        _emit(event="listening", port=urlsplit(server.url).port, url=server.url)
        play = asyncio.create_task(_play(server, messages, go if gated else None))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({play, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if play.done():
            play.result()  # a failure to publish ends the process with its traceback
            await stopped
        else:
            play.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stomp_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--gated", action="store_true", help="publish only after SIGUSR1")
    args = parser.parse_args(argv)
    run_loop(serve(args.port, args.messages, gated=args.gated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
