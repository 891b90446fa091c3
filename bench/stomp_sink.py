"""The publisher's ceiling: ``python -m bench.stomp_sink --url URL --messages N``.

A subscriber that does nothing with a MESSAGE but count it (no STOMP parsing, no events, no
disk), so the rate it sees is what ``bench.stomp_server`` and the WebSocket transport can
deliver at all. If the daemon's realtime rate is close to this, the publisher is the
bottleneck and the daemon's figure is a lower bound. Prints one JSON line when all N are in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import websockets
from websockets.asyncio.client import connect

from bench.load import run_loop
from bench.stomp_server import DESTINATION
from bridge.sources import stomp_codec as codec


async def sink(url: str, messages: int) -> None:
    async with connect(
        url, subprotocols=[websockets.Subprotocol("v12.stomp")], max_size=2**22
    ) as ws:
        # No heart-beats either way: nothing but MESSAGE frames arrives.
        hello = codec.connect(host="", login=None, passcode=None, heartbeat=(0, 0))
        await ws.send(codec.encode(hello).decode())
        reply = await ws.recv()
        if not (isinstance(reply, str) and reply.startswith("CONNECTED")):
            raise RuntimeError(f"not connected: {reply!r:.200}")
        await ws.send(codec.encode(codec.subscribe(id="sub-0", destination=DESTINATION)).decode())
        received, first_ns = 0, 0
        while received < messages:
            data = await ws.recv()
            # The server sends one frame per WebSocket message: a prefix check is enough.
            if isinstance(data, str) and data.startswith("MESSAGE"):
                received += 1
                first_ns = first_ns or time.monotonic_ns()
        last_ns = time.monotonic_ns()
        print(json.dumps({"received": received, "first_ns": first_ns, "last_ns": last_ns}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stomp_sink")
    parser.add_argument("--url", required=True)
    parser.add_argument("--messages", type=int, required=True)
    args = parser.parse_args(argv)
    run_loop(sink(args.url, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
