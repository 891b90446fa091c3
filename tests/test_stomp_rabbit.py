"""Interop with a real STOMP-over-WebSocket broker: RabbitMQ's web-stomp, on loopback.

The broker is a private node started for the test session (tests/rabbit.py); messages are
published with stomp.py over plain STOMP/TCP, a client we did not write.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from bridge.app import Daemon
from tests.conftest import daemon_config, until
from tests.rabbit import Rabbit

TOPIC = "/topic/OC_778"


def leg(uuid: str, state: str = "CHANNEL_BRIDGE") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": "Caller",
        "number": "09876543210",
        "state": state,
        "topic": "OC_778",
        "subTopic": "",
        "talkingToNumber": "9001",
    }


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [
            json.loads(body) for (body,) in conn.execute("SELECT body FROM events ORDER BY seq")
        ]


def source(rabbit: Rabbit) -> dict[str, Any]:
    realtime = {
        "url": rabbit.ws_url,
        "destinations": [TOPIC],
        "login": rabbit.login,
        "passcode": rabbit.passcode,
        "host": "/",  # RabbitMQ reads the CONNECT host header as the virtual host
        "heartbeat_ms": [1000, 1000],
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    return {"name": "coral", "vendor": "coral", "realtime": realtime}


async def publish_until_committed(rabbit: Rabbit, daemon: Daemon, message: dict[str, Any]) -> None:
    """Topics drop messages sent before the SUBSCRIBE is in place: send until it lands.

    The same message again is the same event id, so repeats are stored once.
    """
    uuid = message["uuid"]

    def landed() -> bool:
        return any(
            e["data"].get("call_id") == uuid and e["type"] == "call.answered"
            for e in events(daemon)
        )

    for _ in range(100):
        await rabbit.apublish(TOPIC, json.dumps(message))
        try:
            await until(landed, timeout_s=0.5, what="the message")
            return
        except (AssertionError, TimeoutError):
            continue
    raise AssertionError(f"{uuid} never arrived through the broker")


async def test_messages_through_rabbitmq_become_events(tmp_path: Path, rabbit: Rabbit) -> None:
    """The client subscribes through RabbitMQ web-stomp; published messages are committed."""
    async with Daemon(daemon_config(tmp_path, sources=[source(rabbit)])) as daemon:
        await until(lambda: daemon.realtime[0].status.connected, what="CONNECTED")
        await publish_until_committed(rabbit, daemon, leg("rabbit-leg-1"))
        answered = [e for e in events(daemon) if e["type"] == "call.answered"]
    assert len(answered) == 1
    assert answered[0]["data"]["other_party"] == "9001"


async def test_broker_restart_is_survived_with_a_gap_event(tmp_path: Path, rabbit: Rabbit) -> None:
    """Restarting the broker drops the client; it reconnects and says so with a gap."""
    async with Daemon(daemon_config(tmp_path, sources=[source(rabbit)])) as daemon:
        await until(lambda: daemon.realtime[0].status.connected, what="CONNECTED")
        await rabbit.restart()
        await until(lambda: daemon.realtime[0].status.connects >= 2, timeout_s=60, what="reconnect")
        await publish_until_committed(rabbit, daemon, leg("rabbit-leg-2"))
        statuses = [e["data"] for e in events(daemon) if e["type"] == "source.status"]
    assert [s["status"] for s in statuses[:3]] == ["connected", "disconnected", "connected"]
    assert statuses[2]["gap_s"] > 0
