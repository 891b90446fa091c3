"""Reload: SIGHUP (and ``POST /v1/reload``) moves a running daemon to a new config without
losing or doubling a committed event or a delivery; a broken config changes nothing."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from bridge import config as config_module
from bridge.app import Daemon
from tests.conftest import base_url, daemon_config, until, until_true
from tests.daemonproc import DaemonProcess
from tests.receiver import SECRET, Receiver, serve

FAST = [0.0, 0.05, 0.05]
ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


def status(n: int) -> dict[str, Any]:
    """A CooCenter extension status: one event each, no call folding in the way."""
    return {"event": "extensionstatus", "exten": str(800 + n), "status": "0", "statustext": "Idle"}


def hook(name: str, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "webhook",
        "url": receiver.url,
        "secrets": [SECRET],
        "retry_schedule_s": FAST,
        **extra,
    }


def write(path: Path, *, sources: list[str], sinks: list[dict[str, Any]], **extra: Any) -> None:
    document = {
        "storage": {"linger_ms": 1},
        "sources": [{"name": name, "vendor": name} for name in sources],
        "sinks": sinks,
        **extra,
    }
    path.write_bytes(tomli_w.dumps(document).encode())


async def push(http: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> int:
    async with http.post(url, json=payload) as response:
        return response.status


def ids(receiver: Receiver) -> Counter[str]:
    """Each event id a receiver accepted, with how many times."""
    return Counter(event["id"] for event in receiver.delivered())


async def test_sighup_adds_sinks_from_their_start_and_removes_a_source(tmp_path: Path) -> None:
    """While pushes keep arriving, SIGHUP adds a sink starting "now", one starting at the oldest
    event, and removes a source: the kept sink gets every event once, the "now" sink exactly
    the events committed after the reload, the "oldest" one all of them, once each."""
    path = tmp_path / "bridge.toml"
    async with (
        serve(Receiver()) as kept,
        serve(Receiver()) as fresh,
        serve(Receiver()) as history,
    ):
        write(path, sources=["coocenter", "oncall"], sinks=[hook("kept", kept)])
        daemon = await DaemonProcess(tmp_path / "data", "--config", str(path)).start()
        try:
            acked: list[int] = []
            async with aiohttp.ClientSession() as http:
                ingest = daemon.url + "/ingest/coocenter"
                for n in range(20):
                    assert await push(http, ingest, status(n)) == 200
                    acked.append(n)
                write(
                    path,
                    sources=["coocenter"],
                    sinks=[
                        hook("kept", kept),
                        hook("fresh", fresh, start="now"),
                        hook("history", history),
                    ],
                )

                async def keep_pushing() -> None:  # pushes in flight across the reload
                    for n in range(20, 60):
                        assert await push(http, ingest, status(n)) == 200

                pushing = asyncio.create_task(keep_pushing())
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGHUP)
                reloaded = await _logged(daemon, "reloaded")
                await pushing
                for n in range(60, 70):
                    assert await push(http, ingest, status(n)) == 200
                # The removed source is gone; the others answer as before.
                assert await push(http, daemon.url + "/ingest/oncall", {}) == 404
                async with http.get(daemon.url + "/v1/events?limit=1000") as response:
                    events = (await response.json())["events"]
            assert len(events) == 70
            every = {event["id"] for event in events}
            after_reload = {e["id"] for e in events if e["seq"] > _head_at(daemon)}
            await until(lambda: set(ids(kept)) == every, what="kept sink: every event")
            await until(lambda: set(ids(history)) == every, what="history sink: every event")
            await until(lambda: set(ids(fresh)) >= after_reload, what="fresh sink: new events")
            assert set(ids(fresh)) == after_reload  # nothing from before its start point
            for receiver in (kept, fresh, history):
                assert max(ids(receiver).values()) == 1, "an event was delivered twice"
            assert reloaded["sinks"] == {
                "added": ["fresh", "history"],
                "removed": [],
                "changed": [],
            }
            assert reloaded["sources"]["removed"] == ["oncall"]
        finally:
            assert await daemon.stop() == 0


async def test_sighup_with_a_broken_config_keeps_the_running_one(tmp_path: Path) -> None:
    """A config with mistakes is refused with every problem logged; sources and sinks go on."""
    path = tmp_path / "bridge.toml"
    async with serve(Receiver()) as receiver:
        write(path, sources=["coocenter", "oncall"], sinks=[hook("crm", receiver)])
        daemon = await DaemonProcess(tmp_path / "data", "--config", str(path)).start()
        try:
            broken = path.read_text().replace('vendor = "oncall"', 'vendor = "oncal"')
            path.write_text(broken.replace("linger_ms = 1", 'linger_ms = 1\nsynchronous = "fast"'))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            refused = await _logged(daemon, "reload_refused")
            paths = " ".join(problem["path"] for problem in refused["problems"])
            assert "sources" in paths or "storage" in paths
            async with aiohttp.ClientSession() as http:
                assert await push(http, daemon.url + "/ingest/oncall", {}) != 404
                assert await push(http, daemon.url + "/ingest/coocenter", status(1)) == 200
                async with http.get(daemon.url + "/readyz") as response:
                    assert response.status == 200
            await until(lambda: len(receiver.delivered()) == 1, what="the old sink delivers")
            assert daemon.proc.returncode is None
        finally:
            assert await daemon.stop() == 0


async def _logged(daemon: DaemonProcess, event: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """The daemon's first log line of this event (waiting for it)."""

    def found() -> dict[str, Any] | None:
        return next((line for line in daemon.lines if line.get("event") == event), None)

    await until(lambda: found() is not None, timeout_s=timeout_s, what=f"log line {event}")
    line = found()
    assert line is not None
    return line


def _head_at(daemon: DaemonProcess) -> int:
    """The seq the "now" sink started after, from its log line."""
    line = next(line for line in daemon.lines if line.get("event") == "sink_starts_now")
    after = line["after"]
    assert isinstance(after, int)
    return after


# -- in-process: the admin endpoint, scopes, and a changed sink's deliveries in flight ---------


async def test_reload_endpoint_needs_admin_and_drains_a_changed_sink(tmp_path: Path) -> None:
    """POST /v1/reload: 403 for a read token; with admin, a sink whose settings changed is
    restarted after its requests in flight finish, so none of them is sent twice."""
    data = tmp_path / "data"
    async with serve(Receiver(delay_s=0.2)) as receiver:
        current: dict[str, Any] = {
            "api": {"tokens": [ADMIN, {"token": READER, "scopes": ["read"]}]},
            "sinks": [hook("crm", receiver, concurrency=8)],
        }

        config = config_module.from_dict(_raw(data, current))
        async with Daemon(config, load=lambda: config_module.from_dict(_raw(data, current))) as d:
            url = base_url(d)
            async with aiohttp.ClientSession() as http:
                for n in range(8):
                    assert await push(http, url + "/ingest/coocenter", status(n)) == 200
                await until(lambda: len(receiver.attempts) > 0 or _in_flight(d) > 0)
                current["sinks"] = [hook("crm", receiver, concurrency=8, timeout_s=7.5)]
                async with http.post(url + "/v1/reload", headers=_bearer(READER)) as response:
                    assert response.status == 403
                    assert (await response.json())["scope"] == "admin"
                async with http.post(url + "/v1/reload", headers=_bearer(ADMIN)) as response:
                    assert response.status == 200
                    body = await response.json()
                assert body["changes"]["sinks"]["changed"] == ["crm"]
                for n in range(8, 12):
                    assert await push(http, url + "/ingest/coocenter", status(n)) == 200
            await until(lambda: len(ids(receiver)) == 12, what="every event delivered")
            await until_true(
                lambda: _cursor_at(d, 12), what="the restarted sink's cursor at the head"
            )
            assert max(ids(receiver).values()) == 1, "a request in flight was sent again"
            assert d.sinks[0].config.timeout_s == 7.5


async def test_reload_endpoint_reports_every_problem_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    current: dict[str, Any] = {"sources": [{"name": "coocenter", "vendor": "coocenter"}]}
    config = config_module.from_dict(_raw(data, current))
    async with Daemon(config, load=lambda: config_module.from_dict(_raw(data, current))) as d:
        current["sources"] = [{"name": "coocenter", "vendor": "nope"}]
        async with (
            aiohttp.ClientSession() as http,
            http.post(base_url(d) + "/v1/reload") as response,
        ):
            assert response.status == 400
            body = await response.json()
        assert body["error"] == "invalid_config"
        assert any("vendor" in problem["path"] for problem in body["problems"])
        assert d.config.sources[0].vendor == "coocenter"
        assert d.reloads == 0


async def test_reload_without_a_config_file_says_so(tmp_path: Path) -> None:
    async with (
        Daemon(daemon_config(tmp_path)) as d,
        aiohttp.ClientSession() as http,
        http.post(base_url(d) + "/v1/reload") as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert "embedded default" in body["problems"][0]["problem"]


def _raw(data: Path, current: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"data_dir": str(data), "linger_ms": 1},
        "sources": [{"name": "coocenter", "vendor": "coocenter"}],
        **current,
    }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _in_flight(daemon: Daemon) -> int:
    return int(daemon.sinks[0].snapshot(daemon.writer.last_seq)["in_flight"])


async def _cursor_at(daemon: Daemon, seq: int) -> bool:
    from bridge.store import deliveries

    return await deliveries.cursor(daemon.reader, "crm") >= seq
