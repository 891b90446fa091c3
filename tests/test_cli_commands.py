"""The command line of commands: what each turns into, and a real `pbx-bridge call` through a
daemon to a simulated CooCenter, whose pushes come back into the stream."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from bridge import cli, cli_commands
from bridge.app import Daemon
from bridge.simulate.coocenter_api import CoocenterApi
from tests.conftest import base_url, daemon_config, until


def body(*argv: str) -> dict[str, Any]:
    return cli_commands.body_of(cli.parse_args(list(argv)))


def test_each_command_line_is_its_normalised_action() -> None:
    """call, hangup, transfer, agent and command make the /v1/commands bodies they say."""
    assert body("call", "--source", "hq", "--from", "808", "--to", "0912") == {
        "source": "hq",
        "action": "call.originate",
        "args": {"from": "808", "to": "0912"},
    }
    assert body("hangup", "--source", "hq", "--extension", "808")["args"] == {"extension": "808"}
    assert body("transfer", "--source", "c", "--call-id", "u1", "--to", "1002", "--caller", "09")[
        "args"
    ] == {"call_id": "u1", "to": "1002", "caller": "09"}
    unavailable = body("agent", "unavailable", "--source", "ivr", "--agent", "9876543210")
    assert unavailable["action"] == "agent.set_available"
    assert unavailable["args"] == {"agent": "9876543210", "available": False}
    assert (
        body("agent", "pause", "--source", "hq", "--agent", "808", "--queue", "630")["action"]
        == "agent.pause"
    )
    generic = body("command", "--source", "hq", "extensions.status", "extension=0808", "all=true")
    assert generic["args"] == {"extension": "0808", "all": True}  # no number guessing


async def run_cli(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]


async def test_pbx_bridge_call_closes_the_loop(tmp_path: Path) -> None:
    """`pbx-bridge call` exits 0 with the outcome; the simulated PBX's pushes follow."""
    async with Daemon(daemon_config(tmp_path)) as daemon:
        push = f"{base_url(daemon)}/ingest/coocenter"
        async with CoocenterApi(push_url=push, talk_s=0.05, retransmit_s=0.05) as pbx:
            source = {"name": "coocenter", "vendor": "coocenter", "api": {"url": pbx.url}}
            await daemon.apply(daemon_config(tmp_path, sources=[source]))
            code, out, err = await run_cli(
                "call",
                "--url",
                base_url(daemon),
                "--source",
                "coocenter",
                "--from",
                "808",
                "--to",
                "0912345678",
            )
            assert code == 0, err
            answer = json.loads(out)
            assert answer["outcome"] == "succeeded"
            await pbx.settled()
            call = f"call/{answer['result']['call_id']}"
            await until(
                lambda: any(
                    e["subject"] == call and e["type"] == "call.ended" for e in events(daemon)
                ),
                what="the call's events",
            )
            code, out, _ = await run_cli(
                "capabilities", "--url", base_url(daemon), "--source", "coocenter"
            )
            assert code == 0
            assert "call.originate" in out
            assert "from=" in out


async def test_a_refusal_exits_1_and_a_bad_command_2(tmp_path: Path) -> None:
    """The PBX saying no (busy) is exit 1 with its message; an argument the bridge refuses, 2."""
    async with CoocenterApi(busy=("808",)) as pbx:
        source = {"name": "coocenter", "vendor": "coocenter", "api": {"url": pbx.url}}
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            url = base_url(daemon)
            code, _, err = await run_cli(
                "call", "--url", url, "--source", "coocenter", "--from", "808", "--to", "0912"
            )
            assert code == 1
            assert "Extension 808 is busy" in err
            code, _, err = await run_cli(
                "command", "--url", url, "--source", "coocenter", "call.fly"
            )
            assert code == 2
            assert "call.originate" in err  # what the vendor can do
