"""The delivery phase's webhook receiver: ``python -m bench.receiver --port 0 [--gated]``.

A minimal aiohttp server answering 200 to every POST. For each request it records the receive
time (``time.monotonic_ns``, one clock for every process on Linux) when the handler starts,
then parses the CloudEvent (or the array of them a batching sink sends) for each ``seq`` and
``data.raw.sent_ns`` (the load generator's send time), so the orchestrator can compute
send-to-receipt latency. Signatures are not verified: the tests do that; here it would only
measure the verifier.

JSON lines out: ``{"event": "bound", "port"}``, ``{"event": "listening", "port", "at_ns"}``,
and on SIGTERM or SIGINT ``{"event": "done", "received", "duplicates", "samples"}`` with one
``[seq, sent_ns, recv_ns]`` per distinct event id (the first receipt; repeats only counted).

With ``--gated`` the socket is bound but does not listen until SIGUSR1: connections are refused
(the sink's breaker opens) while the port stays ours, so the orchestrator can write it into the
daemon's config before the receiver is "up".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from bench.load import HOST, run_loop


class _Raw(msgspec.Struct):
    sent_ns: int = 0


class _Data(msgspec.Struct):
    raw: _Raw = msgspec.field(default_factory=_Raw)


class _CloudEvent(msgspec.Struct):
    id: str
    seq: int
    data: _Data


@dataclass(slots=True)
class Received:
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # seq, sent_ns, recv_ns
    received: int = 0
    duplicates: int = 0
    seen: set[str] = field(default_factory=set)


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _app(received: Received) -> web.Application:
    # One event per request, or a JSON array of them with the sink's ``batch_size`` > 1.
    decode = msgspec.json.Decoder(_CloudEvent | list[_CloudEvent]).decode

    async def hook(request: web.Request) -> web.Response:
        now = time.monotonic_ns()
        body = decode(await request.read())
        for event in body if isinstance(body, list) else (body,):
            received.received += 1
            if event.id in received.seen:
                received.duplicates += 1
            else:
                received.seen.add(event.id)
                received.samples.append((event.seq, event.data.raw.sent_ns, now))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


async def serve(port: int, gated: bool, received: Received) -> None:
    loop = asyncio.get_running_loop()
    stop, go = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    bound = sock.getsockname()[1]
    _emit(event="bound", port=bound)
    runner = web.AppRunner(_app(received), access_log=None)
    await runner.setup()
    try:
        if gated:
            await go.wait()
        await web.SockSite(runner, sock).start()  # listen() happens here
        _emit(event="listening", port=bound, at_ns=time.monotonic_ns())
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--gated", action="store_true", help="listen only after SIGUSR1")
    args = parser.parse_args(argv)
    received = Received()
    run_loop(serve(args.port, args.gated, received))
    done = {
        "event": "done",
        "received": received.received,
        "duplicates": received.duplicates,
        "samples": received.samples,
    }
    sys.stdout.buffer.write(msgspec.json.encode(done) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
