"""HTTP ingest against a running daemon on loopback: 2xx only after commit, precise errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.sources.auth import webkey_for
from tests.conftest import base_url, daemon_config

DIALBEGIN: dict[str, Any] = {
    "event": "dialbegin",
    "timestamp": "1534993059.785012",
    "channel": "DAHDI/i1/18782985586-51",
    "calleridnum": "18782985586",
    "destchannel": "SIP/886-00000065",
    "destcalleridnum": "886",
    "destuniqueid": "1534993059.630",
    "dialstring": "SIP/886",
    "uniqueid": "1534993030.626",
    "mac": "68:69:2e:05:0f:9a",
}


async def events(daemon: Daemon, **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/v1/events", params=params) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body


async def post(
    daemon: Daemon, body: Any, *, path: str = "/ingest/coocenter", **kw: Any
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        if isinstance(body, bytes):
            kw["data"] = body
        else:
            kw["json"] = body
        async with http.post(base_url(daemon) + path, **kw) as response:
            return response.status, await response.json(content_type=None)


async def test_push_is_acknowledged_in_the_vendor_shape_and_stored(daemon: Daemon) -> None:
    """A CooCenter push gets CooCenter's success answer and its events are in the outbox."""
    status, answer = await post(daemon, DIALBEGIN)
    assert (status, answer) == (200, {"status": "success"})
    page = await events(daemon)
    assert [e["type"] for e in page["events"]] == ["call.initiated", "call.ringing"]
    assert [e["seq"] for e in page["events"]] == [1, 2]
    assert page["next_after"] == 2
    assert page["events"][0]["source"] == "/coocenter/coocenter"


async def test_retransmission_is_acknowledged_and_stored_once(daemon: Daemon) -> None:
    """The PBX's 2-second retransmission is answered 2xx and not stored twice."""
    for _ in range(3):
        assert (await post(daemon, DIALBEGIN))[0] == 200
    assert len((await events(daemon))["events"]) == 2


async def test_invalid_json_is_400_with_a_reason(daemon: Daemon) -> None:
    """Malformed bodies are refused with a JSON error, nothing stored."""
    status, answer = await post(daemon, b'{"event": "dialbegin",')
    assert status == 400
    assert answer["error"] == "invalid_payload"
    assert "JSON" in answer["detail"]
    assert (await events(daemon))["events"] == []


async def test_missing_field_is_named(daemon: Daemon) -> None:
    """A payload missing a required key is refused naming that key."""
    broken = {k: v for k, v in DIALBEGIN.items() if k != "uniqueid"}
    status, answer = await post(daemon, broken)
    assert status == 400
    assert answer["field"] == "uniqueid"


async def test_unknown_event_is_kept_as_raw_unmapped(daemon: Daemon) -> None:
    """A well-formed payload with no mapping is kept, never dropped."""
    payload = {"event": "queuememberadded", "queue": "630", "member": "808"}
    assert (await post(daemon, payload))[0] == 200
    (event,) = (await events(daemon))["events"]
    assert event["type"] == "raw.unmapped"
    assert event["data"]["raw"] == payload


async def test_unknown_source_is_404(daemon: Daemon) -> None:
    """Only configured sources have an ingest URL."""
    status, answer = await post(daemon, DIALBEGIN, path="/ingest/nowhere")
    assert status == 404
    assert answer["error"] == "unknown_source"


async def test_path_tail_reaches_the_same_source(daemon: Daemon) -> None:
    """/ingest/{source}/{anything} is the same source (vendors that append API names)."""
    assert (await post(daemon, DIALBEGIN, path="/ingest/coocenter/api/dialbegin"))[0] == 200
    assert len((await events(daemon))["events"]) == 2


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """Bodies over server.max_body_bytes are refused before they are read."""
    config = daemon_config(tmp_path, server={"listen": "127.0.0.1:0", "max_body_bytes": 1024})
    async with Daemon(config) as daemon:
        status, answer = await post(daemon, {**DIALBEGIN, "pad": "x" * 2000})
        assert status == 413
        assert answer["error"] == "payload_too_large"


async def test_webkey_source_refuses_wrong_key_and_stores_nothing(tmp_path: Path) -> None:
    """A WEBKEY source answers 401 to a wrong key and accepts today's md5."""
    from datetime import UTC, datetime

    sources = [
        {"name": "coocenter", "vendor": "coocenter", "auth": {"type": "webkey", "webkey": "k3y"}}
    ]
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        status, _ = await post(daemon, DIALBEGIN, headers={"Authorization": "0" * 32})
        assert status == 401
        assert (await events(daemon))["events"] == []
        today = datetime.now(UTC).date().isoformat()
        status, _ = await post(
            daemon, DIALBEGIN, headers={"Authorization": webkey_for("k3y", today)}
        )
        assert status == 200


async def test_allow_list_refuses_other_addresses(tmp_path: Path) -> None:
    """A source restricted to other networks answers 403 to loopback."""
    sources = [{"name": "coocenter", "vendor": "coocenter", "allow_ips": ["10.0.0.0/8"]}]
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        assert (await post(daemon, DIALBEGIN))[0] == 403


async def test_commit_failure_is_503_and_nothing_is_stored(daemon: Daemon) -> None:
    """When the outbox cannot commit the vendor gets 503 (it retries), never a 2xx."""
    with sqlite3.connect(daemon.config.storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    status, answer = await post(daemon, DIALBEGIN)
    assert status == 503
    assert answer["error"] == "outbox_unavailable"
    with sqlite3.connect(daemon.config.storage.path) as conn:
        conn.execute("DROP TRIGGER poison")
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert (await post(daemon, DIALBEGIN))[0] == 200  # the vendor's retry then succeeds


async def test_events_page_filters_and_pages(daemon: Daemon) -> None:
    """?type= filters, ?limit= pages, next_after continues past filtered-out rows."""
    await post(daemon, DIALBEGIN)
    await post(
        daemon, {"event": "extensionstatus", "exten": "808", "status": "0", "statustext": "Idle"}
    )
    first = await events(daemon, limit="1", type="call.*")
    assert [e["seq"] for e in first["events"]] == [1]
    rest = await events(daemon, after=str(first["next_after"]), type="call.*")
    assert [e["seq"] for e in rest["events"]] == [2]
    assert rest["next_after"] == 3  # past the extension.state row it did not return


@pytest.mark.parametrize(("param", "value"), [("after", "x"), ("limit", "0"), ("limit", "100000")])
async def test_bad_query_is_400_naming_the_parameter(
    daemon: Daemon, param: str, value: str
) -> None:
    """Bad paging parameters are refused naming the parameter."""
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/v1/events", params={param: value}) as response:
            assert response.status == 400
            assert (await response.json())["field"] == param


async def test_api_tokens_protect_consumer_endpoints(tmp_path: Path) -> None:
    """With api.tokens set, consumers need a bearer token (or ?access_token=)."""
    token = "t0ken-t0ken-t0ken-1"
    async with Daemon(daemon_config(tmp_path, api={"tokens": [token]})) as daemon:
        async with aiohttp.ClientSession() as http:
            url = base_url(daemon) + "/v1/events"
            async with http.get(url) as response:
                assert response.status == 401
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
            async with http.get(url, params={"access_token": token}) as response:
                assert response.status == 200


async def test_health_and_readiness(daemon: Daemon) -> None:
    """/healthz says alive; /readyz reports the outbox writable and its last seq."""
    await post(daemon, DIALBEGIN)
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/healthz") as response:
            assert response.status == 200
        async with http.get(base_url(daemon) + "/readyz") as response:
            body = await response.json()
            assert response.status == 200
            assert body["outbox"] == {
                "writable": True,
                "last_seq": 2,
                "commits": 1,
                "error": None,
            }
            assert body["problems"] == {}
            assert body["services"]["writer"]["state"] == "running"


async def test_metrics_count_requests_and_commits(daemon: Daemon) -> None:
    """/metrics (Prometheus text) counts answers by source and status, and committed events."""
    from prometheus_client.parser import text_string_to_metric_families

    await post(daemon, DIALBEGIN)
    await post(daemon, b"not json")
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    ok = (("source", "coocenter"), ("status", "200"))
    bad = (("source", "coocenter"), ("status", "400"))
    assert samples[("pbx_bridge_ingest_requests_total", ok)] == 1
    assert samples[("pbx_bridge_ingest_requests_total", bad)] == 1
    assert samples[("pbx_bridge_events_committed_total", ())] == 2
    assert samples[("pbx_bridge_outbox_last_seq", ())] == 2
    assert samples[("pbx_bridge_writer_up", ())] == 1


async def test_query_token_never_reaches_stored_events(tmp_path: Path) -> None:
    """A shared token given in the query authenticates but is not kept in data.raw."""
    token = "call-log-s3cret"
    sources = [{"name": "callog", "vendor": "callog", "auth": {"type": "token", "token": token}}]
    query = {
        "calllogid": "c-1",
        "callnumber": "9876543210",
        "date": "2026-11-22",
        "time": "10:00:00",
        "callstatus": "ANSWER",
        "token": token,
    }
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        async with aiohttp.ClientSession() as http:
            url = base_url(daemon) + "/ingest/callog"
            async with http.get(url, params=query) as response:
                assert response.status == 200
                assert await response.text() == "Success"
        with sqlite3.connect(daemon.config.storage.path) as conn:
            bodies = [row[0] for row in conn.execute("SELECT body FROM events")]
    assert bodies
    assert all(token.encode() not in body for body in bodies)
