"""Every action of every vendor, through a real daemon to its simulated PBX API: the request
reaches the PBX as the vendor's own call, and its failures come back with the vendor's words."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.simulate.coocenter_api import CoocenterApi
from bridge.simulate.coral_api import CoralApi
from bridge.simulate.oncall_api import OnCallApi
from tests.conftest import base_url, daemon_config, until


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def command(
    http: aiohttp.ClientSession, daemon: Daemon, source: str, action: str, **args: Any
) -> tuple[int, dict[str, Any]]:
    body = {"source": source, "action": action, "args": args}
    async with http.post(f"{base_url(daemon)}/v1/commands", json=body) as response:
        return response.status, await response.json()


async def ok(
    http: aiohttp.ClientSession, daemon: Daemon, source: str, action: str, **args: Any
) -> dict[str, Any]:
    status, answer = await command(http, daemon, source, action, **args)
    assert status == 200, (action, answer)
    assert answer["outcome"] == "succeeded"
    return answer


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]


# -- Coral IRIS IVDX ------------------------------------------------------------------------


async def test_coral_every_action(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Originate, hold, resume, transfer, hang up; agent login, pause, unpause, logout; the
    queries: each is the document's api/v3 call at the PBX."""
    async with CoralApi() as pbx:
        source = {
            "name": "coral",
            "vendor": "coral",
            "api": {"url": pbx.url, "api_key": pbx.api_key, "burst": 100},
        }
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            call = await ok(
                http, daemon, "coral", "call.originate", **{"from": "1001", "to": "0912345678"}
            )
            call_id = call["result"]["call_id"]
            active = await ok(http, daemon, "coral", "calls.active")
            assert [c["call_id"] for c in active["result"]["calls"]] == [call_id]
            await ok(http, daemon, "coral", "call.hold", call_id=call_id)
            await ok(http, daemon, "coral", "call.resume", call_id=call_id)
            await ok(
                http,
                daemon,
                "coral",
                "call.transfer",
                call_id=call_id,
                to="1002",
                caller="0912345678",
            )
            await ok(http, daemon, "coral", "call.hangup", call_id=call_id)
            for action in ("agent.login", "agent.pause", "agent.unpause", "agent.logout"):
                await ok(http, daemon, "coral", action, agent="1003")
            status = await ok(http, daemon, "coral", "extensions.status", extension="1003")
            assert status["result"]["extensions"][0]["extension"] == "1003"
            assert [r.action for r in pbx.received] == [
                "originatecall",
                "getactivecalls",
                "holdcall",
                "unholdcall",
                "queuetransfercall",
                "killactivecalls",
                "agentlogin",
                "agentbreak",
                "agentlogin",
                "agentlogout",
                "agentrealtimestatus",
            ]


async def test_coral_refusals_carry_the_vendors_message(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Unknown extension, busy extension, unknown call: 422 with IVDX's own message."""
    async with CoralApi(busy=("1002",)) as pbx:
        source = {
            "name": "coral",
            "vendor": "coral",
            "api": {"url": pbx.url, "api_key": pbx.api_key, "burst": 100},
        }
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            for args, words in (
                ({"from": "4321", "to": "0912"}, "Extension 4321 not found"),
                ({"from": "1002", "to": "0912"}, "Extension 1002 is busy"),
            ):
                status, answer = await command(http, daemon, "coral", "call.originate", **args)
                assert status == 422, answer
                assert words in answer["error"]["message"]
            status, answer = await command(http, daemon, "coral", "call.hangup", call_id="nope")
            assert status == 422
            assert "no active call" in answer["error"]["message"]


# -- OnCall / PortSIP -----------------------------------------------------------------------


def oncall_source(pbx: OnCallApi, **api: Any) -> dict[str, Any]:
    settings = {
        "url": pbx.url,
        "burst": 100,
        "username": pbx.username,
        "password": pbx.password,
        "domain": pbx.domain,
        "call_extension": pbx.extensions[0],
        "call_password": pbx.web_password,
    }
    return {"name": "oncall", "vendor": "oncall", "api": {**settings, **api}}


async def test_oncall_every_action(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Make call, extension status and call history, each PortSIP's REST call, one login."""
    async with OnCallApi() as pbx:
        async with Daemon(daemon_config(tmp_path, sources=[oncall_source(pbx)])) as daemon:
            await ok(
                http, daemon, "oncall", "call.originate", **{"from": "102", "to": "0909123456"}
            )
            status = await ok(http, daemon, "oncall", "extensions.status", extension="102")
            assert [e["extension"] for e in status["result"]["extensions"]] == ["102"]
            history = await ok(
                http, daemon, "oncall", "calls.history", since="2020-01-01T00:00:00Z"
            )
            assert len(history["result"]["records"]) == len(pbx.call_logs) == 1
            assert [r.action for r in pbx.received] == [
                "credentials/verify",
                "extensions/call",
                "extensions/list",
                "call_logs/list",
            ]


async def test_oncall_refusals_carry_the_vendors_message(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """An unknown extension, a busy one, a wrong make-call password: PortSIP's words, 422."""
    async with OnCallApi(busy=("104",)) as pbx:
        async with Daemon(daemon_config(tmp_path, sources=[oncall_source(pbx)])) as daemon:
            for args, words in (
                ({"from": "999", "to": "0909"}, "Database Nonexistent records."),
                ({"from": "104", "to": "0909"}, "Extension is busy"),
            ):
                status, answer = await command(http, daemon, "oncall", "call.originate", **args)
                assert status == 422, answer
                assert words in answer["error"]["message"]
        config = daemon_config(
            tmp_path / "b", sources=[oncall_source(pbx, call_password="nope-nope")]
        )
        async with Daemon(config) as daemon:
            status, answer = await command(
                http, daemon, "oncall", "call.originate", **{"from": "102", "to": "0909"}
            )
            assert status == 422
            assert "Username or Password incorrect" in answer["error"]["message"]
            assert "nope-nope" not in json.dumps(answer)


# -- Zycoo CooCenter ------------------------------------------------------------------------


async def test_coocenter_every_action(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Click-to-call, transfer, hang up; agent login, pause, unpause, logout; the queries."""
    async with CoocenterApi(webkey="dev-webkey-123") as pbx:
        source = {
            "name": "coocenter",
            "vendor": "coocenter",
            "api": {"url": pbx.url, "webkey": "dev-webkey-123", "burst": 100},
        }
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            await ok(
                http, daemon, "coocenter", "call.originate", **{"from": "808", "to": "0912345678"}
            )
            active = await ok(http, daemon, "coocenter", "calls.active")
            assert len(active["result"]["calls"]) == 1
            await ok(http, daemon, "coocenter", "call.transfer", extension="808", to="801")
            await ok(http, daemon, "coocenter", "call.hangup", extension="801")
            for action in ("agent.login", "agent.pause", "agent.unpause", "agent.logout"):
                await ok(http, daemon, "coocenter", action, agent="803", queue="630")
            await ok(http, daemon, "coocenter", "extensions.status", extension="803")
            assert [r.action for r in pbx.received] == [
                "click-number",
                "current-calls",
                "transfer",
                "hangup",
                "agent-login",
                "agent-pause",
                "agent-pause",
                "agent-logout",
                "extension-hints-status",
            ]


async def test_coocenter_wrong_webkey_unknown_and_busy_extensions(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """422 with the PBX's words for each; the WEBKEY appears nowhere in the answer."""
    async with CoocenterApi(webkey="right-webkey-1", busy=("801",)) as pbx:
        source = {
            "name": "coocenter",
            "vendor": "coocenter",
            "api": {"url": pbx.url, "webkey": "wrong-webkey-2"},
        }
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            status, answer = await command(http, daemon, "coocenter", "calls.active")
            assert status == 422
            assert "Authorization failed" in answer["error"]["message"]
            assert "wrong-webkey-2" not in json.dumps(answer)
        source["api"]["webkey"] = "right-webkey-1"
        async with Daemon(daemon_config(tmp_path / "b", sources=[source])) as daemon:
            for args, words in (
                ({"from": "4321", "to": "0912"}, "Extension 4321 not found"),
                ({"from": "801", "to": "0912"}, "Extension 801 is busy"),
            ):
                status, answer = await command(http, daemon, "coocenter", "call.originate", **args)
                assert status == 422, answer
                assert words in answer["error"]["message"]


async def test_a_click_to_call_closes_the_loop_through_the_pbxs_pushes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The simulated CooCenter places the call and pushes it back: the stream holds the command
    and then the call's own events, with the call id the click answered."""
    config = daemon_config(tmp_path)  # the embedded default's coocenter source, on port 0
    async with Daemon(config) as daemon:
        push_url = f"{base_url(daemon)}/ingest/coocenter"
        async with CoocenterApi(push_url=push_url, talk_s=0.05, retransmit_s=0.05) as pbx:
            source = {"name": "coocenter", "vendor": "coocenter", "api": {"url": pbx.url}}
            await daemon.apply(daemon_config(tmp_path, sources=[source]))
            answer = await ok(
                http, daemon, "coocenter", "call.originate", **{"from": "808", "to": "0912345678"}
            )
            call_id = answer["result"]["call_id"]
            await pbx.settled()
            await until(
                lambda: any(e["type"] == "call.ended" for e in events(daemon)),
                what="the call's end",
            )
        types = [e["type"] for e in events(daemon)]
        assert types[:2] == ["command.requested", "command.succeeded"]
        call_events = [e for e in events(daemon) if e["type"].startswith("call.")]
        assert {e["subject"] for e in call_events} == {f"call/{call_id}"}
        assert "call.initiated" in types
        assert "call.completed" in types


# -- the cloud IVR and the Call Control Manager ---------------------------------------------


async def test_cloud_ivr_every_action(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """An agent number off and on, a holiday, office hours: each a handler.ashx GET."""
    from bridge.simulate.callog_api import CallogApi

    async with CallogApi() as pbx:
        api = {"url": pbx.url, "api_key": "dev-ivr-key", "customer_id": "dev-customer"}
        source = {"name": "ivr", "vendor": "callog", "api": api}
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            await ok(
                http, daemon, "ivr", "agent.set_available", agent="9876543210", available=False
            )
            assert pbx.available["9876543210"] is False
            await ok(http, daemon, "ivr", "agent.set_available", agent="9876543210", available=True)
            assert pbx.available["9876543210"] is True
            await ok(http, daemon, "ivr", "ivr.holiday", date="2026-12-25")
            await ok(
                http,
                daemon,
                "ivr",
                "ivr.office_hours",
                day="Monday",
                start="09:00 AM",
                end="06:00 PM",
            )
            assert [r.action for r in pbx.received] == [
                "ManageAgent",
                "ManageAgent",
                "holiday",
                "OfficeTime",
            ]
            status, answer = await command(http, daemon, "ivr", "ivr.holiday", date="2026-13-45")
            assert status == 400, answer
            assert answer["field"] == "args.date"
        api["api_key"] = "wrong-ivr-key"
        async with Daemon(daemon_config(tmp_path / "b", sources=[source])) as daemon:
            status, answer = await command(
                http, daemon, "ivr", "agent.set_available", agent="9876543210", available=True
            )
            assert status == 422, answer
            assert "Invalid API Key" in answer["error"]["message"]
            assert "wrong-ivr-key" not in json.dumps(answer)


async def test_provisioning_adds_updates_and_deletes_extensions(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """extension.provision through [sources.provisioning] on a source with no API of its own;
    the CCM's refusals (a missing extension, a wrong key) come back in its words."""
    from bridge.simulate.ccm_api import CcmApi

    async with CcmApi() as ccm:
        provisioning = {"url": ccm.endpoint, "security_key": "dev-ccm-key"}
        source = {"name": "hq", "vendor": "coocenter", "provisioning": provisioning}
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            args = {"extension": "2001", "first_name": "Asha"}
            await ok(http, daemon, "hq", "extension.provision", operation="add", **args)
            await ok(
                http,
                daemon,
                "hq",
                "extension.provision",
                operation="update",
                **args,
                last_name="Rao",
            )
            assert ccm.extensions["2001"]["LastName"] == "Rao"
            await ok(
                http, daemon, "hq", "extension.provision", operation="delete", extension="2001"
            )
            assert "2001" not in ccm.extensions
            status, answer = await command(
                http, daemon, "hq", "extension.provision", operation="delete", extension="2001"
            )
            assert status == 422, answer
            assert answer["error"]["vendor_code"] == "WEBSERVICE_ERROR"
            await ok(
                http,
                daemon,
                "hq",
                "phonebook.add",
                first_name="Ravi",
                last_name="K",
                phone="0912345678",
            )
        provisioning["security_key"] = "wrong-ccm-key"
        async with Daemon(daemon_config(tmp_path / "b", sources=[source])) as daemon:
            status, answer = await command(
                http, daemon, "hq", "extension.provision", operation="delete", extension="1"
            )
            assert status == 422, answer
            assert answer["error"]["vendor_code"] == "INVALID_AUTH_ID"
