"""A webhook sink through a SIGKILL: nothing lost, duplicates only for what was in flight."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import until
from tests.daemonproc import DaemonProcess
from tests.receiver import SECRET, Receiver, serve

CONCURRENCY = 4
TOTAL = 300


def config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[[sources]]\nname = "coocenter"\nvendor = "coocenter"\n\n'
        '[[sinks]]\ntype = "webhook"\nname = "crm"\n'
        f"url = {json.dumps(url)}\nsecrets = [{json.dumps(SECRET)}]\n"
        f"concurrency = {CONCURRENCY}\nretry_schedule_s = [0, 0.05, 0.05]\n"
    )
    return path


async def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    """Kill the daemon while it delivers; after a restart every event arrives, few twice."""
    # A receiver slow enough (~80 events/s at this concurrency) that the kill lands mid-stream.
    async with serve(Receiver(delay_s=0.05)) as receiver:
        args = ("--config", str(config_file(tmp_path, receiver.url)))
        daemon = await DaemonProcess(tmp_path / "data", *args).start()
        async with aiohttp.ClientSession() as http:
            for n in range(TOTAL):
                push = {"event": "extensionstatus", "exten": str(n), "status": "0"}
                async with http.post(f"{daemon.url}/ingest/coocenter", json=push) as response:
                    assert response.status == 200
        await until(lambda: len(receiver.delivered()) >= 50, what="deliveries under way")
        await daemon.kill()
        assert len({e["id"] for e in receiver.delivered()}) < TOTAL  # it really was mid-way
        restarted = await DaemonProcess(tmp_path / "data", *args).start()
        try:
            await until(
                lambda: len({e["id"] for e in receiver.delivered()}) == TOTAL,
                timeout_s=60,
                what="every event",
            )
        finally:
            assert await restarted.stop() == 0
    counts = Counter(e["id"] for e in receiver.delivered())
    duplicates = sum(count - 1 for count in counts.values())
    # In flight at the kill (<= concurrency), plus finished ones whose cursor write the kill cut.
    assert duplicates <= 2 * CONCURRENCY
    assert receiver.bad_signatures == 0
