"""OnCall through a real daemon: the tenant token kept, renewed and re-logged once; the call
history folded in by a reconcile run, adding only the records that never arrived."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.simulate.oncall import CDR_EVENTS, scenario
from bridge.simulate.oncall_api import OnCallApi, record_of
from tests.conftest import base_url, daemon_config

START = 1_764_000_000.0


@pytest.fixture
async def pbx() -> AsyncIterator[OnCallApi]:
    async with OnCallApi() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def oncall(pbx: OnCallApi, **api: Any) -> dict[str, Any]:
    return {
        "name": "oncall",
        "vendor": "oncall",
        "api": {
            "url": pbx.url,
            "username": pbx.username,
            "password": pbx.password,
            "domain": pbx.domain,
            "call_extension": pbx.extensions[0],
            "call_password": pbx.web_password,
            **api,
        },
    }


async def command(
    http: aiohttp.ClientSession, daemon: Daemon, action: str, **args: Any
) -> tuple[int, dict[str, Any]]:
    body = {"source": "oncall", "action": action, "args": args}
    async with http.post(f"{base_url(daemon)}/v1/commands", json=body) as response:
        return response.status, await response.json()


async def test_the_token_is_kept_until_it_nears_its_expiry(
    tmp_path: Path, pbx: OnCallApi, http: aiohttp.ClientSession
) -> None:
    """Two commands within the token's life: one login."""
    async with Daemon(daemon_config(tmp_path, sources=[oncall(pbx)])) as daemon:
        for _ in range(2):
            status, answer = await command(http, daemon, "extensions.status")
            assert status == 200, answer
        assert daemon.commander.driver.logins == 1


async def test_a_token_inside_its_refresh_margin_is_renewed_first(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A 30 s token with a 60 s margin is always due: each command logs in first."""
    async with OnCallApi(token_ttl_s=30) as pbx:
        config = daemon_config(tmp_path, sources=[oncall(pbx, token_refresh_margin_s=60)])
        async with Daemon(config) as daemon:
            for _ in range(2):
                assert (await command(http, daemon, "extensions.status"))[0] == 200
            assert daemon.commander.driver.logins == 2


async def test_an_expired_token_is_renewed_once_and_the_command_succeeds(
    tmp_path: Path, pbx: OnCallApi, http: aiohttp.ClientSession
) -> None:
    """The PBX drops every token: the next command is refused once, logs in again, succeeds."""
    async with Daemon(daemon_config(tmp_path, sources=[oncall(pbx)])) as daemon:
        assert (await command(http, daemon, "extensions.status"))[0] == 200
        pbx.expire_tokens()
        status, answer = await command(http, daemon, "extensions.status")
        assert status == 200, answer
        assert daemon.commander.driver.logins == 2
        lists = [r for r in pbx.received if r.path.endswith("/extensions/list")]
        assert len(lists) == 3  # the first, the refused one, its resend


async def test_a_wrong_tenant_password_is_the_vendors_refusal(
    tmp_path: Path, pbx: OnCallApi, http: aiohttp.ClientSession
) -> None:
    """422 with PortSIP's own message; no 5xx, and the password shown nowhere."""
    config = daemon_config(tmp_path, sources=[oncall(pbx, password="not-the-password-x")])
    async with Daemon(config) as daemon:
        status, answer = await command(http, daemon, "extensions.status")
        assert status == 422, answer
        assert "Username or Password incorrect" in answer["error"]["message"]
        assert "not-the-password-x" not in json.dumps(answer)


def completed(daemon: Daemon) -> Counter[str]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        rows = conn.execute("SELECT subject FROM events WHERE type = 'call.completed'")
        return Counter(subject for (subject,) in rows)


async def test_reconcile_adds_only_the_records_that_never_arrived(
    tmp_path: Path, pbx: OnCallApi, http: aiohttp.ClientSession
) -> None:
    """12 calls in the history, 7 of their CDRs pushed: the run adds 5 and repeats none; a
    second run adds nothing. Either CDR shape (with or without call_status) is recognised."""
    calls = [scenario(n, random.Random(n), start=START + n * 60) for n in range(12)]
    pbx.call_logs.extend(record_of(call) for call in calls)
    async with Daemon(daemon_config(tmp_path, sources=[oncall(pbx)])) as daemon:
        url = f"{base_url(daemon)}/ingest/oncall"
        for call in calls[:7]:
            for push in call.pushes:
                target = f"{url}/cdr" if push["event_type"] in CDR_EVENTS else url
                async with http.post(target, json=push) as response:
                    assert response.status == 200, await response.text()
        assert len(completed(daemon)) == 7
        reconcile = f"{base_url(daemon)}/v1/sources/oncall/reconcile"
        async with http.post(reconcile, json={"since": int(START) - 3600}) as response:
            summary = await response.json()
            assert response.status == 200, summary
        assert (summary["records"], summary["added"], summary["duplicates"]) == (12, 5, 7)
        counts = completed(daemon)
        assert len(counts) == 12
        assert set(counts.values()) == {1}
        async with http.post(reconcile, json={"since": int(START) - 3600}) as response:
            again = await response.json()
        assert (again["added"], again["duplicates"]) == (0, 12)
        assert completed(daemon) == counts


async def test_an_unreadable_history_record_is_a_422_naming_it(
    tmp_path: Path, pbx: OnCallApi, http: aiohttp.ClientSession
) -> None:
    """A record with a broken end time: 422 saying which, not a 500; nothing made of it."""
    call = scenario(1, random.Random(1), start=START)
    pbx.call_logs.append({**record_of(call), "end_time": "yesterday-ish"})
    async with Daemon(daemon_config(tmp_path, sources=[oncall(pbx)])) as daemon:
        reconcile = f"{base_url(daemon)}/v1/sources/oncall/reconcile"
        async with http.post(reconcile, json={"since": int(START) - 3600}) as response:
            answer = await response.json()
            assert response.status == 422, answer
        assert "end_time" in answer["error"]["message"]
        assert completed(daemon) == Counter()
