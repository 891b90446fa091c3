"""The SSE subscriber process: ``python -m bench.sse --port P ...``, JSON lines out.

It prints ``{"event": "subscribed"}`` once the stream's headers are in, then records, for every
event, its ``data.raw.sent_ns`` and receive time minus that send time, until SIGTERM or SIGINT;
then it prints those samples. The receive time is taken when the bytes arrive, before parsing.
It asks for HTTP/1.0 so the stream is not chunked: the events are plain ``id:``/``data:``
blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from bench.load import HOST, run_loop


class _Raw(msgspec.Struct):
    gen: int = -1
    seqno: int = -1
    sent_ns: int = 0


class _Data(msgspec.Struct):
    raw: _Raw = msgspec.field(default_factory=_Raw)


class _CloudEvent(msgspec.Struct):
    seq: int
    data: _Data


@dataclass(slots=True)
class Received:
    samples: list[tuple[int, int]] = field(default_factory=list)  # (sent_ns, latency_us)
    events: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


class Subscriber(asyncio.Protocol):
    def __init__(self, received: Received) -> None:
        self._received = received
        self._buffer = bytearray()
        self._headers_done = False
        self._seen: set[tuple[int, int]] = set()
        self._decoder = msgspec.json.Decoder(_CloudEvent)
        self.subscribed = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self._buffer += data
        if not self._headers_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if self._buffer[8:13] != b" 200 ":
                head = bytes(self._buffer[:end]).decode(errors="replace")
                self.subscribed.set_exception(RuntimeError(f"stream refused: {head}"))
                return
            del self._buffer[: end + 4]
            self._headers_done = True
            self.subscribed.set_result(None)
        while (end := self._buffer.find(b"\n\n")) >= 0:
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._event(block, now)

    def _event(self, block: bytes, now: int) -> None:
        at = block.find(b"data: ")
        if at < 0:
            return  # a keep-alive comment
        event = self._decoder.decode(block[at + 6 :])
        received = self._received
        received.events += 1
        if received.first_seq is None:
            received.first_seq = event.seq
        received.last_seq = event.seq
        raw = event.data.raw
        key = (raw.gen, raw.seqno)
        if key in self._seen:
            received.duplicates += 1
            return
        self._seen.add(key)
        received.samples.append((raw.sent_ns, (now - raw.sent_ns) // 1000))


async def subscribe(port: int, received: Received) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    transport, protocol = await loop.create_connection(lambda: Subscriber(received), HOST, port)
    transport.write(
        b"GET /v1/events/stream?after=0 HTTP/1.0\r\nHost: %s:%d\r\n"
        b"Accept: text/event-stream\r\n\r\n" % (HOST.encode(), port)
    )
    try:
        await asyncio.wait_for(protocol.subscribed, 10)
        print('{"event": "subscribed"}', flush=True)
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({protocol.closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sse")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    received = Received()
    run_loop(subscribe(args.port, received))
    sys.stdout.buffer.write(msgspec.json.encode(received) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
