"""The baseline: an aiohttp server that reads the body, answers 200 and does nothing else.

``python -m bench.baseline --port 0`` prints ``{"event": "listening", "port": N}`` like the
daemon and serves until SIGTERM or SIGINT. Same aiohttp, same event loop, same answer size as
the daemon's CooCenter ack, so the gap to the daemon is what durability and normalising cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from bench.load import run_loop

ACK = b'{"status":"success"}'


async def ingest(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ACK, content_type="application/json")


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/ingest/{source}", ingest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(json.dumps({"event": "listening", "port": bound}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    run_loop(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
