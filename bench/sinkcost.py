"""A sink's own CPU per event, without HTTP: ``python -m bench.sinkcost [--batch N]``.

A real daemon (in this process) commits ``--events`` events, then one webhook sink whose sender
answers 200 at once drains them; the process CPU from the sink's start to its cursor reaching
the head, per event, is what the dispatcher, the driver, the outbox reads and the cursor writes
cost, with the network taken out. Compare with ``bench.cpu --sink`` for the whole cost.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.delivery import SECRET
from bridge import config
from bridge.app import Daemon
from bridge.config import WebhookSinkConfig
from bridge.events import make_event
from bridge.sinks.sender import Response
from bridge.sinks.webhook import WebhookSink

SOURCES = [{"name": "coocenter", "vendor": "coocenter"}]


class Instant:
    """A receiver with no network: every request answered 200 at once."""

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        return Response(200)

    async def close(self) -> None:
        return None


async def measure(events: int, batch: int) -> tuple[float, float]:
    """(CPU µs per event, events per second) for the sink alone."""
    with tempfile.TemporaryDirectory(prefix="pbx-sinkcost-") as folder:
        settings = config.from_dict(
            {
                "server": {"listen": "127.0.0.1:0"},
                "storage": {"data_dir": str(Path(folder))},
                "sources": SOURCES,
            }
        )
        async with Daemon(settings) as daemon:
            now = datetime.now(UTC)
            for start in range(0, events, 500):
                await daemon.writer.submit(
                    [
                        make_event(
                            source_name="coocenter",
                            vendor="coocenter",
                            vendorevent="extensionstatus",
                            type="extension.state",
                            time=now,
                            subject=f"extension/{n % 50}",
                            identity=(str(n),),
                            data={"n": n, "pad": "x" * 300},
                        )
                        for n in range(start, min(start + 500, events))
                    ]
                )
            head = daemon.writer.last_seq
            sink_config = config.from_dict(
                {
                    "sources": SOURCES,
                    "sinks": [
                        {
                            "name": "bench",
                            "type": "webhook",
                            "url": "http://127.0.0.1:9/unused",
                            "secrets": [SECRET],
                            "concurrency": 32,
                            "batch_size": batch,
                        }
                    ],
                }
            ).sinks[0]
            assert isinstance(sink_config, WebhookSinkConfig)
            sink = WebhookSink(
                sink_config,
                writer=daemon.writer,
                reader=daemon.reader,
                hub=daemon.hub,
                sender=Instant(),
            )
            cpu, wall = time.process_time(), time.perf_counter()
            async with sink:
                while sink.cursor < head:  # noqa: ASYNC110 (the cursor has no event to wait on)
                    await asyncio.sleep(0.005)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / head, head / wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sinkcost", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, action="append", help="batch_size (repeatable)")
    args = parser.parse_args(argv)
    for batch in args.batch or [1, 10]:
        cpu_us, rate = asyncio.run(measure(args.events, batch))
        print(f"batch_size {batch:>3}: {cpu_us:5.0f} us CPU per event, {rate:8.0f} events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
