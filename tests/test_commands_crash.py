"""Idempotency across a SIGKILL: a CRM that retries with its key after a crash never dials
twice, and gets one outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from bridge.simulate.coral_api import CoralApi
from tests.conftest import until
from tests.daemonproc import DaemonProcess

ORIGINATE = {
    "source": "coral",
    "action": "call.originate",
    "args": {"from": "1001", "to": "0912345678"},
}


def config_file(tmp_path: Path, pbx: CoralApi) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[[sources]]\nname = "coral"\nvendor = "coral"\n'
        f'[sources.api]\nurl = "{pbx.url}"\napi_key = "dev-coral-key"\ntimeout_s = 30\n'
    )
    return path


def command_events(data_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "outbox.sqlite3") as conn:
        rows = conn.execute("SELECT body FROM events WHERE type LIKE 'command.%' ORDER BY seq")
        return [json.loads(body) for (body,) in rows]


async def send(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": key}
    async with http.post(f"{url}/v1/commands", json=ORIGINATE, headers=headers) as response:
        return response.status, await response.json()


async def test_a_concluded_command_is_replayed_after_a_sigkill(tmp_path: Path) -> None:
    """Dialled, answered, then SIGKILL: the retry after the restart is the stored outcome."""
    data_dir = tmp_path / "data"
    async with CoralApi() as pbx, aiohttp.ClientSession() as http:
        daemon = await DaemonProcess(data_dir, "--config", str(config_file(tmp_path, pbx))).start()
        status, first = await send(http, daemon.url, "crm-call-17")
        assert status == 200, first
        await daemon.kill()
        daemon = await DaemonProcess(data_dir, "--config", str(config_file(tmp_path, pbx))).start()
        status, again = await send(http, daemon.url, "crm-call-17")
        assert status == 200, again
        assert (again["id"], again["result"], again["replayed"]) == (
            first["id"],
            first["result"],
            True,
        )
        assert len(pbx.actions("originatecall")) == 1
        assert [e["type"] for e in command_events(data_dir)] == [
            "command.requested",
            "command.succeeded",
        ]
        await daemon.stop()


async def test_a_command_in_flight_at_a_sigkill_is_unknown_after_it_and_never_resent(
    tmp_path: Path,
) -> None:
    """Killed while the PBX holds the dial: the restart concludes it unknown (interrupted); the
    CRM's retry gets that outcome; the PBX saw one dial."""
    data_dir = tmp_path / "data"
    async with CoralApi() as pbx, aiohttp.ClientSession() as http:
        daemon = await DaemonProcess(data_dir, "--config", str(config_file(tmp_path, pbx))).start()
        pbx.stall()
        inflight = asyncio.create_task(send(http, daemon.url, "crm-call-18"))
        await until(lambda: len(pbx.received) == 1, what="the dial at the PBX")
        await daemon.kill()
        with contextlib.suppress(aiohttp.ClientError):  # it died with the daemon: no outcome
            await inflight
        pbx.release()
        daemon = await DaemonProcess(data_dir, "--config", str(config_file(tmp_path, pbx))).start()
        status, answer = await send(http, daemon.url, "crm-call-18")
        assert status == 504, answer
        assert answer["outcome"] == "unknown"
        assert answer["error"]["code"] == "interrupted"
        status, again = await send(http, daemon.url, "crm-call-18")
        assert (status, again["id"]) == (504, answer["id"])
        assert len(pbx.received) == 1
        concluded = [e for e in command_events(data_dir) if e["type"] == "command.failed"]
        assert len(concluded) == 1  # concluded at the restart, once
        assert any(line.get("event") == "commands_interrupted" for line in daemon.lines)
        assert "dev-coral-key" not in json.dumps(daemon.lines)  # the api-key is never logged
        await daemon.stop()
