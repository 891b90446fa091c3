"""Credentials never shown: sink and realtime URLs as the API, logs and events show them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bridge import redact
from bridge.app import Daemon
from tests.conftest import base_url, daemon_config
from tests.receiver import SECRET


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("https://crm.example.com/hooks/pbx", "https://crm.example.com/hooks/pbx"),
        ("https://bot:s3cret@crm.example.com/h", "https://***@crm.example.com/h"),
        ("https://:s3cret@crm.example.com/h", "https://***@crm.example.com/h"),
        (
            "https://crm.example.com/h?api_key=s3cret&tenant=42",
            "https://crm.example.com/h?api_key=***&tenant=***",
        ),
        ("http://u:p@[::1]:8080/h?flag", "http://***@[::1]:8080/h?flag"),
        ("wss://user:pw@pbx.example.com:8443/ws", "wss://***@pbx.example.com:8443/ws"),
        ("https://crm.example.com/h#frag-token", "https://crm.example.com/h"),
        ("http://host:99999999/h", "***"),  # a port out of range: not taken apart, not shown
    ],
)
def test_url(given: str, shown: str) -> None:
    assert redact.url(given) == shown


async def test_the_sinks_api_shows_no_credentials(tmp_path: Path) -> None:
    sink = {
        "name": "crm",
        "type": "webhook",
        "url": "http://bot:s3cret@127.0.0.1:9/hook?api_key=k3y",
        "secrets": [SECRET],
    }
    async with Daemon(daemon_config(tmp_path, sinks=[sink])) as daemon:
        async with aiohttp.ClientSession() as http:
            async with http.get(base_url(daemon) + "/v1/sinks") as response:
                text = await response.text()
    assert "s3cret" not in text
    assert "k3y" not in text
    assert "http://***@127.0.0.1:9/hook?api_key=***" in text
