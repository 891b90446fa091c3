"""The load generator process: ``python -m bench.load closed|open ...``, one JSON line out.

``closed``: N connections, each sending its next request as soon as the previous is answered
(the most a server can take at that concurrency). ``open``: requests leave on a fixed schedule
whatever the server does, so a slow answer cannot slow the offered load down.

Times are ``time.monotonic_ns()``: on Linux that is CLOCK_MONOTONIC, one clock for every
process, so the orchestrator can hand out the measurement window and the SSE subscriber can
subtract a send time taken here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.client import Connection, connect, post

HOST = "127.0.0.1"


@dataclass(slots=True)
class Window:
    """What happened between ``start_ns`` and ``end_ns`` (by completion time)."""

    start_ns: int
    end_ns: int
    latencies_us: list[int] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    sent: int = 0
    max_lag_us: int = 0

    def record(self, sent_ns: int, done_ns: int, status: int) -> None:
        if not self.start_ns <= done_ns < self.end_ns:
            return
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.latencies_us.append((done_ns - sent_ns) // 1000)
        else:
            self.errors += 1


def _status(gen: int, seqno: int, sent_ns: int) -> bytes:
    # extensionstatus: one event per push and no call state, so requests/s are events/s.
    # seqno makes every push distinct; sent_ns rides along in data.raw to the SSE subscriber.
    return (
        b'{"event":"extensionstatus","exten":"%d","status":"0","statustext":"Idle",'
        b'"gen":%d,"seqno":%d,"sent_ns":%d}' % (800 + seqno % 100, gen, seqno, sent_ns)
    )


# A CooCenter call's four pushes, in order: dialbegin (call.initiated + call.ringing), dialend,
# hangup, cdr. Two calls in three are answered (ANSWER, ANSWERED); the third rings out (NOANSWER,
# NO ANSWER: the cdr decides call.missed). Every push goes through the call fold.
_CALL_PUSHES = (
    b'{"event":"dialbegin","timestamp":"%(t)d.5","channel":"SIP/trunk1-%(c)d",'
    b'"calleridnum":"138%(c)08d","destchannel":"SIP/801-%(c)d","destcalleridnum":"801",'
    b'"destuniqueid":"%(c)d.2","uniqueid":"%(c)d.1","sent_ns":%(s)d}',
    b'{"event":"dialend","timestamp":"%(t)d.9","channel":"SIP/trunk1-%(c)d",'
    b'"calleridnum":"138%(c)08d","destchannel":"SIP/801-%(c)d","destcalleridnum":"801",'
    b'"uniqueid":"%(c)d.1","dialstatus":"%(d)s","sent_ns":%(s)d}',
    b'{"event":"hangup","uniqueid":"%(c)d.1","calleridnum":"138%(c)08d",'
    b'"connectedlinenum":"801","sent_ns":%(s)d}',
    b'{"event":"cdr","uniqueid":"%(c)d.1","source":"138%(c)08d","destination":"801",'
    b'"starttime":"2024-09-09 09:34:08","answertime":"","endtime":"2024-09-09 09:35:20",'
    b'"disposition":"%(r)s","duration":"72","billableseconds":"60","calltype":"inbound",'
    b'"sent_ns":%(s)d}',
)


def _lifecycle(gen: int, seqno: int, sent_ns: int) -> bytes:
    call = gen * 100_000_000 + seqno // len(_CALL_PUSHES)
    answered = call % 3 != 0
    fields = {
        b"c": call,
        b"t": 1_725_845_648 + call % 86_400,
        b"s": sent_ns,
        b"d": b"ANSWER" if answered else b"NOANSWER",
        b"r": b"ANSWERED" if answered else b"NO ANSWER",
    }
    return _CALL_PUSHES[seqno % len(_CALL_PUSHES)] % fields


Body = Callable[[int, int, int], bytes]
BODIES: dict[str, Body] = {"status": _status, "lifecycle": _lifecycle}


async def _connect_all(port: int, count: int) -> list[Connection]:
    return list(await asyncio.gather(*(connect(HOST, port) for _ in range(count))))


async def closed_loop(
    *,
    port: int,
    path: str,
    connections: int,
    gen: int,
    window: Window,
    count: int = 0,
    body: Body = _status,
) -> None:
    """Until the window ends or, with ``count``, after that many requests (a fixed backlog)."""
    conns = await _connect_all(port, connections)
    counter = iter(range(count or sys.maxsize))
    if count:
        # A fixed backlog is timed from the window's start: none of it goes out before.
        await asyncio.sleep(max(0.0, (window.start_ns - time.monotonic_ns()) / 1e9))

    async def worker(conn: Connection) -> None:
        for seqno in counter:
            sent = time.monotonic_ns()
            if sent >= window.end_ns:
                return
            status = await conn.request(post(path, HOST, port, body(gen, seqno, sent)))
            window.record(sent, time.monotonic_ns(), status)

    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()


async def open_loop(
    *,
    port: int,
    path: str,
    connections: int,
    gen: int,
    rate: float,
    window: Window,
    body: Body = _status,
) -> None:
    """Send on schedule; a request waits for an idle connection only if all are busy."""
    conns = await _connect_all(port, connections)
    idle: deque[Connection] = deque(conns)
    freed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    interval_ns = 1e9 / rate
    begin = time.monotonic_ns()

    async def one(conn: Connection, seqno: int, due: int) -> None:
        sent = time.monotonic_ns()
        if window.start_ns <= sent < window.end_ns:
            window.sent += 1
            window.max_lag_us = max(window.max_lag_us, (sent - due) // 1000)
        try:
            status = await conn.request(post(path, HOST, port, body(gen, seqno, sent)))
            window.record(sent, time.monotonic_ns(), status)
        finally:
            idle.append(conn)
            freed.set()

    seqno = 0
    try:
        while True:
            due = begin + int(seqno * interval_ns)
            if due >= window.end_ns:
                break
            now = time.monotonic_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            while not idle:
                freed.clear()
                await freed.wait()
            task = asyncio.create_task(one(idle.popleft(), seqno, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            seqno += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for conn in conns:
            conn.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("mode", choices=("closed", "open"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ingest/coocenter")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--gen", type=int, default=0, help="this generator's number (in raw)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open mode: requests/s")
    parser.add_argument("--start-ns", type=int, required=True, help="window start (monotonic)")
    parser.add_argument("--end-ns", type=int, required=True, help="window end and stop")
    parser.add_argument("--count", type=int, default=0, help="closed mode: stop after N (0: no)")
    parser.add_argument(
        "--mix", choices=sorted(BODIES), default="status", help="what the pushes are"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    window = Window(start_ns=args.start_ns, end_ns=args.end_ns)
    if args.mode == "closed":
        run = closed_loop(
            port=args.port,
            path=args.path,
            connections=args.connections,
            gen=args.gen,
            window=window,
            count=args.count,
            body=BODIES[args.mix],
        )
    else:
        run = open_loop(
            port=args.port,
            path=args.path,
            connections=args.connections,
            gen=args.gen,
            rate=args.rate,
            window=window,
            body=BODIES[args.mix],
        )
    run_loop(run)
    sys.stdout.buffer.write(msgspec.json.encode(window) + b"\n")
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, as the daemon does."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
