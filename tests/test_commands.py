"""The command service through a real daemon and a simulated PBX: every command durable
(requested before sent, its outcome after), idempotent, limited, and refused clearly."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.simulate.coral_api import CoralApi
from tests.conftest import base_url, daemon_config, until

KEY = "dev-coral-key"
ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"
CRM = "crm-command-token-0123"


@pytest.fixture
async def pbx() -> AsyncIterator[CoralApi]:
    async with CoralApi(api_key=KEY) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def coral(url: str, **api: Any) -> dict[str, Any]:
    return {"name": "coral", "vendor": "coral", "api": {"url": url, "api_key": KEY, **api}}


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]


def commands(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in events(daemon) if e["type"].startswith("command.")]


async def send(
    http: aiohttp.ClientSession, daemon: Daemon, body: object, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base_url(daemon)}/v1/commands", json=body, headers=headers) as r:
        return r.status, await r.json()


ORIGINATE = {
    "source": "coral",
    "action": "call.originate",
    "args": {"from": "1001", "to": "0912345678"},
}


@pytest.fixture
async def daemon(tmp_path: Path, pbx: CoralApi) -> AsyncIterator[Daemon]:
    async with Daemon(daemon_config(tmp_path, sources=[coral(pbx.url)])) as running:
        yield running


async def test_a_command_is_requested_then_concluded_in_the_stream(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """200 succeeded; command.requested is committed before command.succeeded, both on the
    command's subject, and the PBX got the request once."""
    status, answer = await send(http, daemon, ORIGINATE)
    assert status == 200, answer
    assert answer["outcome"] == "succeeded"
    assert answer["result"]["call_id"] in pbx.active
    requested, succeeded = commands(daemon)
    assert (requested["type"], succeeded["type"]) == ("command.requested", "command.succeeded")
    assert requested["seq"] < succeeded["seq"]
    assert requested["subject"] == succeeded["subject"] == f"command/{answer['id']}"
    assert requested["data"]["args"] == {"from": "1001", "to": "0912345678"}
    assert answer["requested_seq"] == requested["seq"]
    assert [r.action for r in pbx.received] == ["originatecall"]


async def test_a_retry_with_the_same_key_answers_the_stored_outcome(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """The same Idempotency-Key twice: one dial, the same id and outcome, the second replayed."""
    first_status, first = await send(http, daemon, ORIGINATE, **{"Idempotency-Key": "crm-1"})
    again_status, again = await send(http, daemon, ORIGINATE, **{"Idempotency-Key": "crm-1"})
    assert first_status == again_status == 200
    assert again["id"] == first["id"]
    assert again["result"] == first["result"]
    assert again.get("replayed") is True
    assert "replayed" not in first
    assert len(pbx.actions("originatecall")) == 1
    assert len(commands(daemon)) == 2


async def test_concurrent_retries_with_one_key_dial_once(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """Five requests with one key at once: one reaches the PBX, all get its outcome."""
    pbx.stall()
    tasks = [
        asyncio.create_task(send(http, daemon, ORIGINATE, **{"Idempotency-Key": "burst"}))
        for _ in range(5)
    ]
    await until(lambda: len(pbx.received) == 1, what="the one request at the PBX")
    pbx.release()
    answers = await asyncio.gather(*tasks)
    assert {answer["id"] for _, answer in answers} == {answers[0][1]["id"]}
    assert all(status == 200 for status, _ in answers)
    assert len(pbx.received) == 1


async def test_a_key_reused_for_another_command_is_a_conflict(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """409, nothing sent: a key names one command."""
    await send(http, daemon, ORIGINATE, **{"Idempotency-Key": "k"})
    other = {**ORIGINATE, "args": {"from": "1002", "to": "0999999999"}}
    status, answer = await send(http, daemon, other, **{"Idempotency-Key": "k"})
    assert status == 409
    assert answer["error"] == "idempotency_conflict"
    assert len(pbx.received) == 1


async def test_a_pbx_that_never_answers_is_unknown_and_not_retried(
    tmp_path: Path, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """A stalled PBX: 504 outcome unknown after timeout_s; a retry with the key is the same
    unknown, and the PBX saw one request."""
    config = daemon_config(tmp_path, sources=[coral(pbx.url, timeout_s=0.3)])
    async with Daemon(config) as daemon:
        pbx.stall()
        status, answer = await send(http, daemon, ORIGINATE, **{"Idempotency-Key": "slow"})
        assert status == 504, answer
        assert answer["outcome"] == "unknown"
        assert answer["error"]["code"] == "unknown"
        pbx.release()
        status, again = await send(http, daemon, ORIGINATE, **{"Idempotency-Key": "slow"})
        assert (status, again["outcome"], again["id"]) == (504, "unknown", answer["id"])
        assert len(pbx.received) == 1
        assert commands(daemon)[-1]["type"] == "command.failed"
        assert commands(daemon)[-1]["data"]["outcome"] == "unknown"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_pbx_is_not_sent_and_says_so(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Connection refused: 502, error code not_sent, and command.failed in the stream."""
    config = daemon_config(tmp_path, sources=[coral(f"http://127.0.0.1:{closed_port()}")])
    async with Daemon(config) as daemon:
        status, answer = await send(http, daemon, ORIGINATE)
        assert status == 502, answer
        assert (answer["outcome"], answer["error"]["code"]) == ("failed", "not_sent")
        assert [e["type"] for e in commands(daemon)] == ["command.requested", "command.failed"]


async def test_a_wrong_api_key_is_the_vendors_refusal_and_never_shown(
    tmp_path: Path, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """422 with Coral's own message; the configured key appears in no answer and no event."""
    wrong = "wrong-key-4b1d9e"
    config = daemon_config(tmp_path, sources=[coral(pbx.url, api_key=wrong)])
    async with Daemon(config) as daemon:
        status, answer = await send(http, daemon, ORIGINATE)
        assert status == 422, answer
        assert answer["error"]["code"] == "refused"
        assert "Invalid api-key" in answer["error"]["message"]
        assert wrong not in json.dumps(answer)
        assert wrong not in json.dumps(events(daemon))


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"source": "nope", "action": "call.originate"}, "source", "configured: coral"),
        ({"source": "coral", "action": "call.fly"}, "action", "call.originate"),
        (
            {"source": "coral", "action": "call.originate", "args": {"from": "1001"}},
            "args.to",
            "required",
        ),
        (
            {
                "source": "coral",
                "action": "call.originate",
                "args": {"from": "1001", "to": "1\r\nX: y"},
            },
            "args.to",
            "control character",
        ),
        (
            {"source": "coral", "action": "call.hangup", "args": {"call_id": "x", "speed": 1}},
            "args.speed",
            "no such argument",
        ),
        (["not", "an", "object"], "", "JSON object"),
    ],
)
async def test_a_bad_command_is_a_400_naming_the_field_and_nothing_is_stored(
    daemon: Daemon,
    pbx: CoralApi,
    http: aiohttp.ClientSession,
    body: object,
    field: str,
    needle: str,
) -> None:
    """Refused before the outbox: no command event, no request at the PBX."""
    status, answer = await send(http, daemon, body)
    assert status == 400, answer
    assert answer["error"] == "invalid_command"
    assert answer["field"] == field
    assert needle in answer["detail"]
    assert commands(daemon) == []
    assert pbx.received == []


async def test_an_unsupported_action_lists_what_the_vendor_can_do(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """agent.set_available is a cloud IVR action: Coral's 400 lists Coral's actions."""
    status, answer = await send(http, daemon, {"source": "coral", "action": "agent.set_available"})
    assert status == 400
    assert "call.originate" in answer["supported"]
    assert "agent.set_available" not in answer["supported"]


async def test_a_source_without_an_api_takes_no_commands(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The answer says which table is missing."""
    async with Daemon(daemon_config(tmp_path)) as daemon:
        status, answer = await send(
            http, daemon, {"source": "coocenter", "action": "call.originate"}
        )
        assert status == 400
        assert "[sources.api]" in answer["detail"]


async def test_capabilities_give_each_action_its_argument_schema(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """The schema is the one the command check applies: required arguments listed."""
    async with http.get(f"{base_url(daemon)}/v1/sources/coral/capabilities") as response:
        assert response.status == 200
        answer = await response.json()
    originate = answer["actions"]["call.originate"]
    assert set(originate["args"]["required"]) == {"from", "to"}
    assert originate["args"]["additionalProperties"] is False
    assert answer["actions"]["calls.active"]["query"] is True
    async with http.get(f"{base_url(daemon)}/v1/sources/nope/capabilities") as response:
        assert response.status == 404


async def test_queries_are_answered_and_not_stored(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """calls.active answers the PBX's calls, normalised; the outbox gets no command events."""
    await send(http, daemon, ORIGINATE)
    before = len(commands(daemon))
    status, answer = await send(http, daemon, {"source": "coral", "action": "calls.active"})
    assert status == 200, answer
    assert [call["call_id"] for call in answer["result"]["calls"]] == list(pbx.active)
    assert len(commands(daemon)) == before


async def test_a_burst_over_the_rate_limit_is_429_and_not_stored(
    tmp_path: Path, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """burst 1, rate 0.01/s: the second command is 429 with Retry-After, never requested."""
    config = daemon_config(tmp_path, sources=[coral(pbx.url, burst=1, rate_per_s=0.01)])
    async with Daemon(config) as daemon:
        assert (await send(http, daemon, ORIGINATE))[0] == 200
        async with http.post(f"{base_url(daemon)}/v1/commands", json=ORIGINATE) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
        assert len(pbx.received) == 1
        assert len(commands(daemon)) == 2


async def test_read_tokens_cannot_place_calls(
    tmp_path: Path, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """read: 403 naming the command scope; command: allowed, but not admin; admin: both."""
    tokens = [
        {"token": READER, "scopes": ["read"]},
        {"token": CRM, "scopes": ["command"], "name": "crm"},
        {"token": ADMIN, "scopes": ["admin"]},
    ]
    config = daemon_config(tmp_path, sources=[coral(pbx.url)], api={"tokens": tokens})
    async with Daemon(config) as daemon:
        status, answer = await send(http, daemon, ORIGINATE, Authorization=f"Bearer {READER}")
        assert (status, answer["scope"]) == (403, "command")
        status, answer = await send(http, daemon, ORIGINATE, Authorization=f"Bearer {CRM}")
        assert status == 200
        assert commands(daemon)[0]["data"]["requested_by"] == "crm"
        async with http.post(
            f"{base_url(daemon)}/v1/sources/coral/repair",
            headers={"Authorization": f"Bearer {CRM}"},
        ) as response:
            assert response.status == 403
        second = {**ORIGINATE, "args": {"from": "1002", "to": "0912345678"}}  # 1001 is busy now
        status, _ = await send(http, daemon, second, Authorization=f"Bearer {ADMIN}")
        assert status == 200
        assert len(pbx.received) == 2


async def test_the_outcome_can_be_read_back_by_id(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """GET /v1/commands/{id}: the same outcome; an unknown id is 404."""
    _, answer = await send(http, daemon, ORIGINATE)
    async with http.get(f"{base_url(daemon)}/v1/commands/{answer['id']}") as response:
        assert response.status == 200
        stored = await response.json()
    assert stored["outcome"] == "succeeded"
    assert stored["result"] == answer["result"]
    async with http.get(f"{base_url(daemon)}/v1/commands/no-such-id") as response:
        assert response.status == 404


async def test_a_crm_that_hangs_up_does_not_cut_the_command(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """The client gives up mid-command; the command still concludes and is stored."""
    pbx.stall()
    task = asyncio.create_task(send(http, daemon, ORIGINATE, **{"Idempotency-Key": "gone"}))
    await until(lambda: len(pbx.received) == 1, what="the request at the PBX")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pbx.release()
    await until(lambda: len(commands(daemon)) == 2, what="the outcome")
    assert commands(daemon)[-1]["type"] == "command.succeeded"


async def test_commands_are_counted_by_source_and_outcome(
    daemon: Daemon, pbx: CoralApi, http: aiohttp.ClientSession
) -> None:
    """/metrics: one succeeded, one refused (a busy extension) for the coral source."""
    await send(http, daemon, ORIGINATE)
    await send(http, daemon, ORIGINATE)  # 1001 is in the first call now: busy
    async with http.get(f"{base_url(daemon)}/metrics") as response:
        text = await response.text()
    assert 'pbx_bridge_commands_total{outcome="succeeded",source="coral"} 1.0' in text
    assert 'pbx_bridge_commands_total{outcome="failed",source="coral"} 1.0' in text
    assert "pbx_bridge_commands_in_flight 0.0" in text
