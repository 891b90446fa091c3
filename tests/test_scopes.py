"""API tokens with scopes, and credentials never shown by the operations API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge.app import Daemon
from tests.conftest import base_url, daemon_config
from tests.receiver import SECRET

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789ab"

# What a read token may do, and what only admin may.
READ = [
    ("GET", "/v1/events"),
    ("GET", "/v1/calls"),
    ("GET", "/v1/sinks"),
]
ADMIN_ONLY = [
    ("GET", "/v1/quarantine"),
    ("GET", "/v1/quarantine/1"),
    ("POST", "/v1/quarantine/reprocess"),
    ("GET", "/v1/sinks/crm/dead"),
    ("POST", "/v1/sinks/crm/dead/retry"),
    ("POST", "/v1/sinks/crm/dead/purge"),
    ("POST", "/v1/sinks/crm/replay"),
    ("POST", "/v1/reload"),
]
SINK_PASSWORD = "hunter2-sink-password"
SINK_KEY = "sk_live_abcdef123456"
HEADER_SECRET = "Bearer crm-header-secret-987"


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    config = daemon_config(
        tmp_path,
        api={
            "tokens": [
                ADMIN,
                {"token": READER, "scopes": ["read"], "name": "dashboard"},
                {"token": OPERATOR, "scopes": ["admin"]},
            ]
        },
        sinks=[
            {
                "name": "crm",
                "type": "webhook",
                # A closed port: nothing is delivered, and nothing needs to be.
                "url": f"http://crm:{SINK_PASSWORD}@127.0.0.1:9/hook?api_key={SINK_KEY}",
                "secrets": [SECRET],
                "headers": {"Authorization": HEADER_SECRET},
            }
        ],
    )
    async with Daemon(config) as running:
        yield running


async def _call(
    daemon: Daemon, method: str, path: str, token: str | None
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"from_seq": 1} if path.endswith("/replay") else {"all": True}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url(daemon) + path, headers=headers, json=body) as response,
    ):
        await response.read()
        return response


async def test_a_read_token_reads_but_cannot_replay_purge_or_reload(daemon: Daemon) -> None:
    for method, path in READ:
        assert (await _call(daemon, method, path, READER)).status == 200, path
    for method, path in ADMIN_ONLY:
        response = await _call(daemon, method, path, READER)
        assert response.status == 403, (method, path, response.status)


async def test_admin_implies_read_and_a_plain_string_holds_every_scope(daemon: Daemon) -> None:
    for token in (ADMIN, OPERATOR):
        for method, path in READ:
            assert (await _call(daemon, method, path, token)).status == 200, (token, path)
        for method, path in ADMIN_ONLY:
            # Allowed: whatever the handler says (404 for a missing entry, 400 for no file to
            # reload), never the scope refusal.
            assert (await _call(daemon, method, path, token)).status not in (401, 403), path


async def test_no_token_or_a_wrong_one_is_401_and_the_403_names_the_scope(daemon: Daemon) -> None:
    for token in (None, "wrong-token-0123456789abcdef", READER[:-1]):
        assert (await _call(daemon, "GET", "/v1/events", token)).status == 401
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            base_url(daemon) + "/v1/sinks/crm/replay",
            headers={"Authorization": f"Bearer {READER}"},
            json={"from_seq": 1},
        ) as response,
    ):
        assert response.status == 403
        assert await response.json() == {
            "error": "forbidden",
            "detail": "this token lacks the 'admin' scope",
            "scope": "admin",
        }


async def test_no_credential_appears_in_the_sinks_list(daemon: Daemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            base_url(daemon) + "/v1/sinks", headers={"Authorization": f"Bearer {READER}"}
        ) as response,
    ):
        text = await response.text()
        shown = (await response.json())["sinks"][0]
    for secret in (SINK_PASSWORD, SINK_KEY, HEADER_SECRET, "crm-header-secret", SECRET):
        assert secret not in text
    assert shown["url"].startswith("http://")
    assert "127.0.0.1:9/hook" in shown["url"]  # still says where it delivers
    assert shown["headers"] == ["Authorization"]  # names only


async def test_failed_logins_are_logged_rate_limited_and_all_counted(daemon: Daemon) -> None:
    """A flood of wrong tokens: one warning (without the token), every refusal counted."""
    wrong = "wrong-token-0123456789abcdef"
    with capture_logs() as logs:
        for _ in range(20):
            assert (await _call(daemon, "GET", "/v1/events", wrong)).status == 401
        assert (await _call(daemon, "POST", "/v1/reload", READER)).status == 403
    refused = [line for line in logs if line["event"] == "api_refused"]
    assert [line["reason"] for line in refused] == ["wrong_token", "missing_scope"]
    assert refused[1]["token"] == "dashboard"  # its name, never the token
    assert wrong not in repr(logs)
    assert READER not in repr(logs)
    assert daemon.access.refused == 21
