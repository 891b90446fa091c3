"""``python -m bench.commands``: what the bridge adds to a command, on loopback.

Three figures from one run, side by side: a request straight to the simulated CooCenter API
(the baseline), the same query through ``POST /v1/commands`` (checked, limited, answered, not
stored), and a durable command (``command.requested`` and its outcome, each committed with
``synchronous=full`` before the answer). Sequential, one request at a time: commands are a
CRM's clicks, so the figure that matters is the latency each adds, not a rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import aiohttp

from bridge import config
from bridge.app import Daemon
from bridge.simulate.coocenter_api import CoocenterApi


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95)]
    return f"median {statistics.median(ordered) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms"


async def run(count: int) -> None:
    async with CoocenterApi() as pbx:
        api = {"url": pbx.url, "burst": 1000, "rate_per_s": 1e6}
        cfg = config.from_dict(
            {
                "server": {"listen": "127.0.0.1:0"},
                "storage": {"data_dir": tempfile.mkdtemp(prefix="bench-commands-")},
                "sources": [{"name": "hq", "vendor": "coocenter", "api": api}],
            }
        )
        async with Daemon(cfg) as daemon, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{daemon.port}/v1/commands"
            hints = f"{pbx.url}/coocenter-api/extensions/extension-hints-status"
            query = {"source": "hq", "action": "extensions.status", "args": {"extension": "808"}}
            durable = {"source": "hq", "action": "agent.logout", "args": {"agent": "808"}}
            direct: list[float] = []
            via: list[float] = []
            stored: list[float] = []
            for n in range(count):
                began = time.perf_counter()
                async with http.get(hints) as response:
                    await response.read()
                direct.append(time.perf_counter() - began)
                began = time.perf_counter()
                async with http.post(url, json=query) as response:
                    await response.read()
                via.append(time.perf_counter() - began)
                began = time.perf_counter()
                headers = {"Idempotency-Key": f"bench-{n}"}
                async with http.post(url, json=durable, headers=headers) as response:
                    await response.read()  # the PBX refuses (not logged in): still two commits
                stored.append(time.perf_counter() - began)
    print(f"{count} requests each, one at a time, loopback:")
    print(f"  straight to the simulated PBX     {_ms(direct)}")
    print(f"  a query through the bridge        {_ms(via)}")
    print(f"  a durable command (2 commits)     {_ms(stored)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    asyncio.run(run(parser.parse_args().count))


if __name__ == "__main__":
    main()
