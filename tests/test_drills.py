"""Failure drills (issue 9, item 7): each runs a real daemon process on loopback, breaks
something the way production will, and checks what the bridge promises still holds.

Each prints one ``DRILL <name>: ...`` line with its figures (pushes acked, lost, doubled, 5xx
answers, the daemon's peak RSS, seconds): ``pytest tests/test_drills.py -s | grep DRILL``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.simulate.coral_realtime import RealtimeServer
from tests.conftest import until, until_true
from tests.daemonproc import DaemonProcess, reap_leftovers
from tests.drillkit import (
    HUGE_BODY_BYTES,
    Figures,
    Hook,
    all_events,
    get_json,
    histogram,
    loopback_tcp,
    pid_of,
    raw_status,
    readyz,
    request,
    restart,
    sinks,
    stalled_subscriber,
    start_daemon,
)
from tests.receiver import SECRET, Receiver, serve

# Retries fast enough for a drill, and enough of them that an outage of a few seconds
# dead-letters nothing.
SCHEDULE_S = [0, 0.05, 0.1, 0.2, 0.4, 0.8, *([1.0] * 40)]


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "webhook",
        "name": name,
        "url": url,
        "secrets": [SECRET],
        "retry_schedule_s": SCHEDULE_S,
        "breaker_cool_down_s": 0.1,
        **extra,
    }


COOCENTER = {"name": "coocenter", "vendor": "coocenter"}  # auth = none


# -- 1. SIGKILL under load ------------------------------------------------------------------

SENDERS = 8
PUSHES = 2400
KILL_AFTER_ACKS = (300, 900, 1600)


def load_push(n: int) -> dict[str, str]:
    """Odd: an extensionstatus (an id per receipt: never resent). Even: a dialbegin (ids from
    vendor fields: resent until acknowledged, as the PBX does)."""
    if n % 2:
        return {"event": "extensionstatus", "exten": f"7{n:05d}", "status": "0", "statustext": "x"}
    return {
        "event": "dialbegin",
        "uniqueid": f"1725845648.{n}",
        "timestamp": str(int(time.time())),
        "calleridnum": "13800138000",
        "destcalleridnum": "8001",
        "channel": "SIP/trunk-00000001",
        "destchannel": f"SIP/8001-{n:08x}",
        "destuniqueid": f"1725845648.{n}.1",
    }


def expected_keys(push: dict[str, str]) -> list[tuple[str, str]]:
    """What an acknowledged push must have put in the outbox: (type, key) pairs."""
    if push["event"] == "extensionstatus":
        return [("extension.state", push["exten"])]
    subject = f"call/{push['uniqueid']}"
    return [("call.initiated", subject), ("call.ringing", subject)]


def key_of(event: dict[str, Any]) -> tuple[str, str]:
    if event["type"] == "extension.state":
        return event["type"], event["data"]["raw"]["exten"]
    return event["type"], event["subject"]


@dataclass
class Load:
    """What the senders saw."""

    acked: list[dict[str, str]] = field(default_factory=list)
    failed: int = 0  # connection errors and timeouts (the kills)
    statuses: Counter[int] = field(default_factory=Counter)

    def acked_at_least(self, count: int) -> bool:
        return len(self.acked) >= count


class Crashing:
    """The daemon under test, replaced after each SIGKILL; senders wait for the new one."""

    def __init__(self, daemon: DaemonProcess, figures: Figures) -> None:
        self.daemon = daemon
        self.figures = figures
        self.up = asyncio.Event()
        self.up.set()

    async def url(self) -> str:
        await self.up.wait()
        return self.daemon.url

    async def crash(self) -> None:
        self.up.clear()
        self.figures.sample(self.daemon)
        await self.daemon.kill()
        self.daemon = await restart(self.daemon)
        self.up.set()


async def send_pushes(
    http: aiohttp.ClientSession, target: Crashing, numbers: Iterator[int], load: Load
) -> None:
    for n in numbers:  # shared by the senders: each push is taken once
        push = load_push(n)
        resend = push["event"] == "dialbegin"
        for _ in range(50):
            url = await target.url()
            try:
                async with http.post(f"{url}/ingest/coocenter", json=push) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                load.failed += 1
                if resend:
                    continue
                break
            load.statuses[status] += 1
            if 200 <= status < 300:
                load.acked.append(push)
            if status >= 500 and resend:
                continue
            break


async def test_sigkill_under_load(tmp_path: Path) -> None:
    """Three SIGKILLs under 8 concurrent senders: every push answered 2xx is in the outbox
    exactly once, and the webhook receiver got every one of its events."""
    figures = Figures("sigkill_under_load")
    async with serve(Receiver()) as receiver:
        config = {"sources": [COOCENTER], "sinks": [webhook("crm", receiver.url, concurrency=8)]}
        target = Crashing(await start_daemon(tmp_path, config), figures)
        load = Load()

        async def killer() -> None:
            for acks in KILL_AFTER_ACKS:
                await until(partial(load.acked_at_least, acks), timeout_s=60, what=f"{acks} acks")
                await target.crash()

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            numbers = iter(range(PUSHES))
            await asyncio.gather(
                killer(), *(send_pushes(http, target, numbers, load) for _ in range(SENDERS))
            )
            daemon = target.daemon
            events = await all_events(http, daemon.url)
            stored = Counter(key_of(event) for event in events)
            ids = {key_of(event): event["id"] for event in events}
            wanted = [key for push in load.acked for key in expected_keys(push)]
            missing = {key for key in wanted if not stored[key]}
            wanted_ids = {ids[key] for key in wanted if key in ids}
            await until(
                lambda: wanted_ids <= {e["id"] for e in receiver.delivered()},
                timeout_s=30,
                what="every acknowledged event at the receiver",
            )
            figures.sample(daemon)
        assert await daemon.stop() == 0

    delivered = Counter(e["id"] for e in receiver.delivered())
    twice = sum(delivered[i] - 1 for i in wanted_ids if delivered[i] > 1)
    figures.acked = len(load.acked)
    figures.lost = sum(1 for push in load.acked if set(expected_keys(push)) & missing)
    figures.doubled = sum(stored[key] - 1 for key in set(wanted) if stored[key] > 1)
    figures.server_errors = sum(n for status, n in load.statuses.items() if status >= 500)
    figures.extra = {
        "kills": len(KILL_AFTER_ACKS),
        "failed_requests": load.failed,
        "delivered_twice": twice,
    }
    figures.print()
    assert load.failed > 0  # the kills really landed mid-stream
    assert missing == set()
    assert figures.doubled == 0
    assert figures.server_errors == 0
    assert receiver.bad_signatures == 0
    assert len(load.acked) > KILL_AFTER_ACKS[-1]
    # Resent after a kill: what was in flight, plus what finished while its cursor write
    # waited behind the ingest load (25 to 50 a kill here). A cursor that is not kept would
    # resend everything delivered so far: thousands.
    assert twice < 200 * len(KILL_AFTER_ACKS)


# -- 2. disk full ---------------------------------------------------------------------------

PAD = "x" * 8000  # fills the 4 MiB in a few hundred pushes
FULL_ROUNDS = 15
FILL_LIMIT = 2000


async def sh(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace").strip()


def padded(n: int) -> dict[str, str]:
    return {"event": "extensionstatus", "exten": f"5{n:05d}", "status": "0", "statustext": PAD}


@dataclass
class Pushes:
    """Every push and its answer."""

    answers: list[tuple[dict[str, str], int]] = field(default_factory=list)

    async def push(self, http: aiohttp.ClientSession, url: str, payload: dict[str, str]) -> int:
        async with http.post(f"{url}/ingest/coocenter", json=payload) as response:
            await response.read()
        self.answers.append((payload, response.status))
        return response.status

    def with_status(self, test: Callable[[int], bool]) -> list[dict[str, str]]:
        return [payload for payload, status in self.answers if test(status)]


async def test_disk_full(tmp_path: Path) -> None:
    """A full disk: ingest answers 503 (never 2xx for what was not committed, never 500) and
    /readyz names the outbox; grown again, the same process takes pushes and its sink drains."""
    data = tmp_path / "data"
    data.mkdir()
    code, out = await sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data))
    if code:
        pytest.skip(f"cannot mount a 4 MiB tmpfs for the outbox: {out}")
    figures = Figures("disk_full")
    receiver_down = True

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if receiver_down else (200, {})

    try:
        async with serve(Receiver(script=script)) as receiver:
            config = {"sources": [COOCENTER], "sinks": [webhook("crm", receiver.url)]}
            daemon = await start_daemon(tmp_path, config)
            pid = pid_of(daemon)
            pushes = Pushes()
            async with aiohttp.ClientSession() as http:
                n = 0
                while await pushes.push(http, daemon.url, padded(n)) != 503:
                    n += 1
                    # 16 MB of events cannot fit in 4 MiB: acks past that were never committed
                    assert n < FILL_LIMIT, f"{n} pushes of 8 kB acknowledged on a 4 MiB disk"
                full_after = len(pushes.answers)
                # While it stays full, concurrent pushes (one group commit, several waiters)
                # and /readyz, which must name the outbox as the problem.
                named: list[dict[str, Any]] = []
                for _ in range(FULL_ROUNDS):
                    batch = [padded(n + i) for i in range(1, 5)]
                    n += len(batch)
                    await asyncio.gather(*(pushes.push(http, daemon.url, p) for p in batch))
                    status, ready = await readyz(http, daemon.url)
                    if status == 503 and "outbox" in ready["problems"].get("writer", ""):
                        named.append(ready)
                assert named, "/readyz never named the outbox while commits failed"
                assert all(ready["outbox"]["writable"] is False for ready in named)

                code, out = await sh("mount", "-o", "remount,size=64m", str(data))
                assert code == 0, out
                receiver_down = False

                async def recovered() -> bool:
                    nonlocal n
                    n += 1
                    return 200 <= await pushes.push(http, daemon.url, padded(n)) < 300

                async def is_ready() -> bool:
                    return (await readyz(http, daemon.url))[0] == 200

                await until_true(recovered, timeout_s=15, what="a 2xx after the disk grew")
                for m in range(n + 1, n + 21):  # and it goes on taking pushes
                    await pushes.push(http, daemon.url, padded(m))
                await until_true(is_ready, timeout_s=15, what="/readyz 200 after the disk grew")
                events = await all_events(http, daemon.url)
                every_id = {event["id"] for event in events}

                async def drained() -> bool:
                    crm = (await sinks(http, daemon.url))["crm"]
                    return crm["lag"] == 0 and every_id <= {e["id"] for e in receiver.delivered()}

                await until_true(drained, timeout_s=20, what="the sink to deliver every event")
                crm = (await sinks(http, daemon.url))["crm"]
                figures.sample(daemon)
                assert daemon.proc is not None
                assert (daemon.proc.pid, daemon.proc.returncode) == (pid, None)  # never restarted
            assert await daemon.stop() == 0
    finally:
        await reap_leftovers()  # a daemon still running keeps the mount busy
        code, out = await sh("umount", str(data))
        if code:
            await sh("umount", "-l", str(data))

    stored = Counter(e["data"]["raw"]["exten"] for e in events if e["type"] == "extension.state")
    acked = pushes.with_status(lambda s: 200 <= s < 300)
    refused = pushes.with_status(lambda s: s == 503)
    figures.acked = len(acked)
    figures.lost = sum(1 for push in acked if not stored[push["exten"]])
    figures.doubled = sum(1 for push in acked if stored[push["exten"]] > 1)
    figures.server_errors = sum(1 for _, status in pushes.answers if status >= 500)
    figures.extra = {
        "refused_503": len(refused),
        "committed_despite_503": sum(1 for push in refused if stored[push["exten"]]),
        "pushes_until_full": full_after,
        "readyz_named_outbox": len(named),
        "dead_letters": crm["dead"],
    }
    figures.print()
    assert {status for _, status in pushes.answers} <= {200, 503}  # never a 500
    assert (figures.lost, figures.doubled) == (0, 0)
    assert figures.extra["committed_despite_503"] == 0  # a 503 is a rolled-back commit
    assert crm["dead"] == 0


# -- 3. poison messages ---------------------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000
ONCALL_AUTH = b"Authorization: Basic cG9ydHNpcDpwdw=="  # portsip:pw
CALLOG_TOKEN = "callog-drill-token-0123456789"
OC = "/topic/OC_778"


JSON_TYPE = b"Content-Type: application/json"
# (what, body, headers) of the unreadable pushes every HTTP source gets.
POISON: list[tuple[str, bytes, tuple[bytes, ...]]] = [
    ("deep_json", DEEP, (JSON_TYPE,)),
    ("invalid_utf8_body", b'{"event": "\xff\xfe", "event_type": "\xc3\x28"}', (JSON_TYPE,)),
    (
        "invalid_utf8_headers",
        b"{not json, and its headers are not UTF-8 either",
        (b"Content-Type: application/json; charset=\xff\xfe", b"X-Pbx-Note: \xc3\x28\xe9"),
    ),
    ("not_json", b"<event>not json</event>", (b"Content-Type: text/xml",)),
]


def good_tag(source: str) -> str:
    """A value only the good push to ``source`` carries (no source's tag contains another's)."""
    return f"{source}-drill-good"


def good_push(source: str) -> tuple[bytes, bytes, bytes]:
    """(method, target, body) of a push the source reads, tagged with a unique value."""
    tag = good_tag(source)
    body: dict[str, Any]
    if source == "coocenter":
        body = {"event": "extensionstatus", "exten": tag, "status": "0", "statustext": "Idle"}
    elif source == "oncall":
        body = {
            "event_type": "call_established",
            "session_id": tag,
            "call_id": "Kq3Vn8RZ0aW1yT5uXb2LpA..",
            "caller": "sip:02873062020@192.0.2.10",
            "callee": "sip:02873000100@test01.oncall",
            "call_target": "sip:108@test01.oncall",
            "time": str(int(time.time())),
        }
    elif source == "coral":
        body = {
            "status": 0,
            "message": "Incoming call",
            "data": {
                "Event": "Popup",
                "CallerNum": "09891612004",
                "extension": "9000",
                "uuid": tag,
            },
        }
    else:
        query = (
            f"token={CALLOG_TOKEN}&calllogid={tag}&callnumber=9845012345&date=2024-03-05"
            "&time=10:00:00&agentnumber=9900112233&ivrduration=25&callduration=185"
            "&callstatus=ANSWER"
        )
        return b"GET", f"/ingest/callog?{query}".encode(), b""
    return b"POST", f"/ingest/{source}".encode(), json.dumps(body).encode()


def target_of(source: str) -> bytes:
    return (
        f"/ingest/{source}?token={CALLOG_TOKEN}".encode()
        if source == "callog"
        else (f"/ingest/{source}".encode())
    )


def auth_of(source: str) -> tuple[bytes, ...]:
    return (ONCALL_AUTH,) if source == "oncall" else ()


REALTIME_GOOD = {
    "uuid": "coralrt-drill-good",
    "name": "Caller",
    "number": "09876543210",
    "state": "CHANNEL_BRIDGE",
    "topic": "OC_778",
    "subTopic": "",
    "talkingToNumber": "9001",
}
REALTIME_POISON = [("deep_json", DEEP), ("invalid_utf8", b'{"uuid": "\xff\xfe\xfd"}')]


async def test_poison_messages(tmp_path: Path) -> None:
    """Unreadable pushes to every HTTP source kind, and unreadable realtime messages: each is
    refused with a 4xx (or skipped), kept byte for byte in quarantine, and the good push or
    message after them is committed; the realtime source stays connected throughout."""
    figures = Figures("poison_messages")
    http_sources = ["coocenter", "oncall", "coral", "callog"]
    async with RealtimeServer(heartbeat_ms=(100, 100)) as pbx:
        realtime = {
            "url": pbx.url,
            "destinations": [OC, "/topic/STATE_UPDATE"],
            "heartbeat_ms": [100, 100],
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        config = {
            "sources": [
                COOCENTER,
                {
                    "name": "oncall",
                    "vendor": "oncall",
                    "auth": {"type": "basic", "username": "portsip", "password": "pw"},
                },
                {"name": "coral", "vendor": "coral"},
                {
                    "name": "callog",
                    "vendor": "callog",
                    "auth": {"type": "token", "token": CALLOG_TOKEN},
                },
                {"name": "coralrt", "vendor": "coral", "realtime": realtime},
            ]
        }
        daemon = await start_daemon(tmp_path, config)
        answers: dict[tuple[str, str], int] = {}
        async with aiohttp.ClientSession() as http:

            async def connected() -> bool:
                status, ready = await readyz(http, daemon.url)
                return status == 200 and ready["realtime"]["coralrt"]["connected"]

            await until_true(connected, timeout_s=10, what="the realtime source to connect")
            for source in http_sources:
                for what, body, headers in POISON:
                    data = request(
                        b"POST", target_of(source), *auth_of(source), *headers, body=body
                    )
                    answers[(source, what)] = await raw_status(daemon.port, data)
                method, target, body = good_push(source)
                headers = (*auth_of(source), JSON_TYPE)
                data = request(method, target, *headers, body=body or None)
                answers[(source, "good")] = await raw_status(daemon.port, data)

            for _, body in REALTIME_POISON:
                assert await pbx.publish_body(OC, body) == 1
            assert await pbx.publish(OC, REALTIME_GOOD) == 1

            def tagged(events: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
                return [e for e in events if good_tag(source) in json.dumps(e)]

            events: list[dict[str, Any]] = []

            async def good_realtime_committed() -> bool:
                nonlocal events
                events = await all_events(http, daemon.url)
                return bool(tagged(events, "coralrt"))

            await until_true(good_realtime_committed, timeout_s=10, what="the good message")
            status, ready = await readyz(http, daemon.url)
            held: dict[str, dict[bytes, dict[str, Any]]] = {}
            for source in [*http_sources, "coralrt"]:
                _, page = await get_json(http, f"{daemon.url}/v1/quarantine?source={source}")
                held[source] = {}
                for entry in page["entries"]:
                    _, shown = await get_json(http, f"{daemon.url}/v1/quarantine/{entry['id']}")
                    kept = (
                        shown["body"].encode()
                        if "body" in shown
                        else bytes.fromhex(shown["body_hex"])
                    )
                    held[source][kept] = shown
            figures.sample(daemon)
        assert await daemon.stop() == 0

    good = {source: tagged(events, source) for source in [*http_sources, "coralrt"]}
    figures.acked = sum(1 for source in http_sources if 200 <= answers[(source, "good")] < 300)
    figures.lost = sum(1 for found in good.values() if not found)
    figures.doubled = sum(
        count - 1
        for found in good.values()
        for count in Counter(e["type"] for e in found).values()
        if count > 1
    )
    figures.server_errors = sum(1 for status in answers.values() if status >= 500)
    refused = Counter(status for (_, what), status in answers.items() if what != "good")
    figures.extra = {
        "poison_pushes": sum(refused.values()),
        "refused": histogram(refused),
        "quarantined": sum(len(entries) for entries in held.values()),
        "realtime_poison": len(REALTIME_POISON),
        "realtime_reconnects": pbx.connects - 1,
    }
    figures.print()
    for source in http_sources:
        for what, _, _ in POISON:
            assert 400 <= answers[(source, what)] < 500, (source, what, answers[(source, what)])
        assert set(held[source]) == {body for _, body, _ in POISON}, source
        assert 200 <= answers[(source, "good")] < 300, source
        assert good[source], f"the good {source} push is not in the outbox"
    assert set(held["coralrt"]) == {body for _, body in REALTIME_POISON}
    assert {entry["path"] for entry in held["coralrt"].values()} == {OC}
    assert good["coralrt"], "the good realtime message is not in the outbox"
    assert status == 200
    assert ready["realtime"]["coralrt"]["connected"] is True
    assert ready["realtime"]["coralrt"]["rejected"] == len(REALTIME_POISON)
    assert pbx.connects == 1  # the poison did not cost the subscription
    assert figures.doubled == 0


# -- 4. 10,000 hostile requests -------------------------------------------------------------

API_TOKEN = "hostile-drill-api-token-0123456789"
TOKEN = "hostile-drill-source-token-0123456789"
WEBKEY = "zycoo-drill-webkey"
BEARER = b"Authorization: Bearer " + API_TOKEN.encode()
GOOD_BASIC = b"Authorization: Basic " + base64.b64encode(b"u:p")
HOSTILE_REQUESTS = 10_000
HOSTILE_CONCURRENCY = 32
HOSTILE_CONFIG: dict[str, Any] = {
    "server": {"header_timeout_s": 2, "body_timeout_s": 2},
    "api": {"tokens": [API_TOKEN]},
    "sources": [
        {"name": "open", "vendor": "coocenter"},
        {"name": "coral", "vendor": "coral"},
        {"name": "tok", "vendor": "callog", "auth": {"type": "token", "token": TOKEN}},
        {
            "name": "basic",
            "vendor": "oncall",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        {
            "name": "digest",
            "vendor": "oncall",
            "auth": {"type": "digest", "username": "u", "password": "p"},
        },
        {"name": "zycoo", "vendor": "coocenter", "auth": {"type": "webkey", "webkey": WEBKEY}},
    ],
}
ONCALL_BODY = b'{"event_type": "call_ended", "session_id": "1", "call_id": "x"}'
WS_UPGRADE = (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13")
WS_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="

# A hostile request: its bytes (given a serial number) and the answers that are right for it.
Build = Callable[[int], bytes]
Hostile = tuple[str, Build, Callable[[int], bool]]


def is_4xx(status: int) -> bool:
    return 400 <= status < 500


def exactly(expected: int) -> Callable[[int], bool]:
    return lambda status: status == expected


def fixed(data: bytes) -> Build:
    return lambda n: data


def post(target: bytes, body: bytes, *headers: bytes) -> Build:
    return fixed(request(b"POST", target, *headers, body=body))


def get(target: bytes, *headers: bytes) -> Build:
    return fixed(request(b"GET", target, *headers))


def digest(fields: bytes) -> Build:
    return post(b"/ingest/digest", ONCALL_BODY, b"Authorization: Digest " + fields)


def bad_content_type(n: int) -> bytes:
    """A readable push whose Content-Type is not UTF-8: taken (its exten is unique)."""
    body = json.dumps({"event": "extensionstatus", "exten": f"h{n}", "status": "0"}).encode()
    charset = b"Content-Type: application/json; charset=\xff\xfe"
    return request(b"POST", b"/ingest/open", charset, body=body)


def todays_webkey(n: int) -> bytes:
    """The right WEBKEY and a readable push (its exten unique): the control, answered 200."""
    key = hashlib.md5(f"{WEBKEY}{datetime.now(UTC):%Y-%m-%d}".encode()).hexdigest().encode()
    body = json.dumps({"event": "extensionstatus", "exten": f"w{n}", "status": "0"}).encode()
    return request(b"POST", b"/ingest/zycoo", b"Authorization: " + key, JSON_TYPE, body=body)


def wrong_webkey(n: int) -> bytes:
    """An MD5-shaped WEBKEY for a date that is not today's (nor yesterday's or tomorrow's)."""
    day = f"19{n % 100:02d}-01-01"
    key = hashlib.md5(f"{WEBKEY}{day}".encode()).hexdigest().encode()
    return request(b"POST", b"/ingest/zycoo", b"Authorization: " + key, body=b"{}")


HOSTILE: list[Hostile] = [
    # credentials that are not UTF-8, not base64, not what they claim to be
    (
        "basic_latin1",
        post(b"/ingest/basic", ONCALL_BODY, b"Authorization: Basic \xe9"),
        exactly(401),
    ),
    (
        "basic_garbage",
        post(b"/ingest/basic", ONCALL_BODY, b"Authorization: Basic \xff\xfe=="),
        exactly(401),
    ),
    (
        "basic_not_utf8_inside",
        post(
            b"/ingest/basic", ONCALL_BODY, b"Authorization: Basic " + base64.b64encode(b"\xff:\xfe")
        ),
        exactly(401),
    ),
    (
        "basic_no_colon",
        post(b"/ingest/basic", ONCALL_BODY, b"Authorization: Basic " + base64.b64encode(b"u")),
        exactly(401),
    ),
    ("basic_for_digest", post(b"/ingest/digest", ONCALL_BODY, GOOD_BASIC), exactly(401)),
    ("digest_latin1", digest(b'username="\xe9", realm="x", nonce="\xff"'), exactly(401)),
    (
        "digest_huge_nc",
        digest(
            b'username="u", realm="pbx-bridge", nonce="x", uri="/ingest/digest", '
            b'response="zz", qop=auth, nc=' + b"f" * 40 + b', cnonce="c"'
        ),
        exactly(401),
    ),
    ("digest_unclosed", digest(b'username="u'), exactly(401)),
    ("digest_commas", digest(b',,,,,,=,="'), exactly(401)),
    (
        "digest_bad_algorithm",
        digest(
            b'username="u", realm="pbx-bridge", nonce="x", uri="/", response="0", algorithm=\xff'
        ),
        exactly(401),
    ),
    ("webkey_latin1", post(b"/ingest/zycoo", b"{}", b"Authorization: \xe9\xe9\xe9"), exactly(401)),
    (
        "webkey_not_hex",
        post(b"/ingest/zycoo", b"{}", b"Authorization: " + b"\xff" * 32),
        exactly(401),
    ),
    ("webkey_other_day", wrong_webkey, exactly(401)),
    ("token_query_not_utf8", get(b"/ingest/tok?token=%FF%FE"), exactly(401)),
    ("token_header_not_utf8", get(b"/ingest/tok", b"X-Bridge-Token: \xff\xfe"), exactly(401)),
    ("token_huge", get(b"/ingest/tok?token=" + b"A" * 5000), exactly(401)),
    ("bearer_latin1", get(b"/v1/events", b"Authorization: Bearer \xe9\xff"), exactly(401)),
    ("bearer_huge", get(b"/v1/events", b"Authorization: Bearer " + b"A" * 7000), exactly(401)),
    ("bearer_query_not_utf8", get(b"/v1/events?access_token=%FF%FE"), exactly(401)),
    ("bearer_no_token", get(b"/v1/sinks", b"Authorization: Bearer"), exactly(401)),
    (
        "bearer_stream_latin1",
        get(b"/v1/events/stream", b"Authorization: Bearer \xe9"),
        exactly(401),
    ),
    # bodies: nested thousands deep, not UTF-8, a Content-Type that is not UTF-8
    ("deep_open", post(b"/ingest/open", DEEP), exactly(400)),
    ("deep_coral", post(b"/ingest/coral/incomingcall", DEEP), exactly(400)),
    ("deep_basic", post(b"/ingest/basic", DEEP, GOOD_BASIC), exactly(400)),
    (
        "deep_token",
        post(b"/ingest/tok?token=" + TOKEN.encode(), DEEP, b"Content-Type: application/json"),
        exactly(400),
    ),
    ("deep_no_credentials", post(b"/ingest/digest", DEEP), exactly(401)),
    ("deep_reprocess", post(b"/v1/quarantine/reprocess", DEEP, BEARER), exactly(400)),
    (
        "reprocess_huge_id",
        post(b"/v1/quarantine/reprocess", b'{"ids": [99999999999999999999]}', BEARER),
        exactly(400),
    ),
    ("reprocess_not_utf8", post(b"/v1/quarantine/reprocess", b"\xff\xfe", BEARER), exactly(400)),
    ("body_not_utf8", post(b"/ingest/open", b'{"event": "\xff\xfe"}'), exactly(400)),
    (
        "form_not_utf8",
        post(
            b"/ingest/tok?token=" + TOKEN.encode(),
            b"calllogid=\xff",
            b"Content-Type: application/x-www-form-urlencoded",
        ),
        exactly(400),
    ),
    ("content_type_not_utf8", bad_content_type, exactly(200)),
    ("webkey_today", todays_webkey, exactly(200)),  # the control: the right key is taken
    # Last-Event-ID values that are no seq
    *(
        (
            f"last_event_id_{i}",
            get(b"/v1/events/stream", BEARER, b"Last-Event-ID: " + value),
            exactly(400),
        )
        for i, value in enumerate(
            [
                "\u00b2".encode(),
                b"9" * 4301,
                str(2**63).encode(),
                b"-1",
                b"1e3",
                b"\xff\xfe",
                b"0x10",
                b"0" * 20,
            ]
        )
    ),
    # quarantine ids that are no ids, integers past any range
    *(
        (f"quarantine_id_{i}", get(b"/v1/quarantine/" + entry, BEARER), exactly(404))
        for i, entry in enumerate(
            [b"%C2%B2", b"99999999999999999999", b"-3", b"%FF", b"%00", b"1e3"]
        )
    ),
    *(
        (f"huge_integer_{i}", get(target, BEARER), exactly(400))
        for i, target in enumerate(
            [
                b"/v1/events?after=" + b"9" * 4301,
                b"/v1/events?after=" + str(2**63).encode(),
                b"/v1/events?limit=" + b"9" * 30,
                b"/v1/events?limit=-1",
                b"/v1/events?after=%C2%B2",
                b"/v1/events/stream?after=" + b"9" * 30,
                b"/v1/quarantine?after=99999999999999999999",
                b"/v1/calls?limit=99999999999999999999",
                b"/v1/calls?before=99999999999999999999999",
                b"/v1/calls?after=-1",
            ]
        )
    ),
    (
        "replay_huge_seq",
        post(b"/v1/sinks/none/replay", b'{"from_seq": 99999999999999999999}', BEARER),
        exactly(404),
    ),
    # garbage methods, paths and framing
    ("method_unknown", fixed(b"FOO /ingest/open HTTP/1.1\r\nHost: x\r\n\r\n"), is_4xx),
    ("method_not_ascii", fixed(b"G\xffT / HTTP/1.1\r\nHost: x\r\n\r\n"), is_4xx),
    ("method_not_allowed", fixed(request(b"DELETE", b"/v1/events", BEARER)), is_4xx),
    ("path_not_ascii", fixed(b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"), is_4xx),
    ("path_bad_escape", get(b"/%zz%00"), is_4xx),
    ("path_dot_dot", get(b"/ingest/open/../../../etc/passwd"), is_4xx),
    ("path_asterisk", fixed(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"), is_4xx),
    ("path_absolute_form", get(b"http://evil.example/v1/events"), is_4xx),
    ("path_too_long", get(b"/ingest/open/" + b"a" * 9000), is_4xx),
    ("http2_preface", fixed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), is_4xx),
    ("http_version_9", fixed(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"), is_4xx),
    ("tls_hello", fixed(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40)), is_4xx),
    ("header_without_colon", fixed(b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"), is_4xx),
    (
        "content_length_overflow",
        fixed(
            b"POST /ingest/open HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"
        ),
        is_4xx,
    ),
    (
        "content_length_negative",
        fixed(b"POST /ingest/open HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        is_4xx,
    ),
    (
        "content_length_too_large",
        fixed(b"POST /ingest/open HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"),
        exactly(413),
    ),
    (
        "chunk_size_garbage",
        fixed(b"POST /ingest/open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        is_4xx,
    ),
    (
        "length_and_chunked",
        fixed(
            b"POST /ingest/open HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        is_4xx,
    ),
    ("ws_key_not_base64", get(b"/v1/ws", BEARER, *WS_UPGRADE, b"Sec-WebSocket-Key: !!!!"), is_4xx),
    # These answered 500 until this drill found them.
    *(
        (f"type_patterns_{name}", get(target + pattern * count, BEARER, *headers), exactly(400))
        for name, target, pattern, count, headers in [
            ("65", b"/v1/events?type=", b"a,", 65, ()),
            ("1200", b"/v1/events?type=", b"a,", 1200, ()),
            ("prefixes_1200", b"/v1/events?type=", b"a.*,", 1200, ()),
            ("stream_1200", b"/v1/events/stream?type=", b"a,", 1200, ()),
            ("ws_1200", b"/v1/ws?type=", b"a,", 1200, (*WS_UPGRADE, WS_KEY)),
        ]
    ),
    (
        "ws_key_not_ascii",
        get(b"/v1/ws", BEARER, *WS_UPGRADE, b"Sec-WebSocket-Key: \xe9\xe9"),
        exactly(400),
    ),
    (
        "ws_version_not_ascii",
        get(b"/v1/ws", BEARER, *WS_UPGRADE[:2], b"Sec-WebSocket-Version: \xff", WS_KEY),
        exactly(400),
    ),
    (
        "ws_upgrade_not_ascii",
        get(b"/v1/ws", BEARER, b"Upgrade: \xffwebsocket", *WS_UPGRADE[1:], WS_KEY),
        exactly(400),
    ),
]


async def storm(port: int, plan: list[Hostile]) -> tuple[Counter[int], dict[str, Counter[int]]]:
    """Send every request of ``plan``, ``HOSTILE_CONCURRENCY`` at a time, a connection each."""
    statuses: Counter[int] = Counter()
    by_kind: dict[str, Counter[int]] = {}
    work = iter(enumerate(plan))

    async def worker() -> None:
        for n, (kind, build, _) in work:
            status = await raw_status(port, build(n))
            statuses[status] += 1
            by_kind.setdefault(kind, Counter())[status] += 1

    await asyncio.gather(*(worker() for _ in range(HOSTILE_CONCURRENCY)))
    return statuses, by_kind


def wrong_answers(
    kinds: list[Hostile], by_kind: dict[str, Counter[int]]
) -> dict[str, Counter[int]]:
    right = {kind: check for kind, _, check in kinds}
    return {
        kind: Counter({s: n for s, n in got.items() if not right[kind](s)})
        for kind, got in by_kind.items()
        if any(not right[kind](s) for s in got)
    }


async def test_hostile_10k(tmp_path: Path) -> None:
    """10,000 hostile requests at 32 at a time against one source of each auth kind and the
    bearer-guarded API: never a 5xx, every one answered as its kind should be, and the
    daemon still ready and taking pushes afterwards."""
    figures = Figures("hostile_10k")
    daemon = await start_daemon(tmp_path, HOSTILE_CONFIG)
    rng = random.Random(9)
    plan = [HOSTILE[i % len(HOSTILE)] for i in range(HOSTILE_REQUESTS)]
    rng.shuffle(plan)
    began = time.monotonic()
    statuses, by_kind = await storm(daemon.port, plan)
    storm_s = time.monotonic() - began
    async with aiohttp.ClientSession() as http:
        fine = {"event": "extensionstatus", "exten": "after-the-storm", "status": "0"}
        async with http.post(f"{daemon.url}/ingest/open", json=fine) as response:
            after_status = response.status
        ready_status, _ = await readyz(http, daemon.url)
        events = await all_events(http, daemon.url, token=API_TOKEN)
        _, held = await get_json(http, f"{daemon.url}/v1/quarantine", token=API_TOKEN)
    figures.sample(daemon)
    assert daemon.proc is not None
    alive = daemon.proc.returncode is None
    assert await daemon.stop() == 0

    taken = Counter(e["data"]["raw"]["exten"] for e in events if e["type"] == "extension.state")
    # The pushes that were meant to be taken, by the exten each carries.
    prefix = {"content_type_not_utf8": "h", "webkey_today": "w"}
    sent_taken = [f"{prefix[kind]}{n}" for n, (kind, _, _) in enumerate(plan) if kind in prefix]
    figures.acked = statuses[200]
    figures.lost = sum(1 for exten in sent_taken if not taken[exten])
    figures.doubled = sum(1 for exten in sent_taken if taken[exten] > 1)
    figures.server_errors = sum(count for status, count in statuses.items() if status >= 500)
    figures.extra = {
        "requests": sum(statuses.values()),
        "kinds": len(HOSTILE),
        "statuses": histogram(statuses),
        "no_answer": statuses[0],
        "quarantined": len(held["entries"]),
        "requests_per_s": f"{HOSTILE_REQUESTS / storm_s:.0f}",
    }
    figures.print()
    assert figures.server_errors == 0, wrong_answers(HOSTILE, by_kind)
    assert wrong_answers(HOSTILE, by_kind) == {}
    assert alive
    assert (after_status, ready_status) == (200, 200)
    assert (figures.lost, figures.doubled) == (0, 0)
    # Retries of one unreadable payload are one entry: the storm cannot fill the quarantine.
    assert len(held["entries"]) <= 10


# -- 5. webhook receivers that fail every way ----------------------------------------------

FAULT_PUSHES = 100  # per phase, before and after the SIGKILL
RSS_BOUND_MIB = 200


def fault_sinks(hooks: dict[str, Hook]) -> list[dict[str, Any]]:
    quick = {"timeout_s": 0.5, "concurrency": 4, "breaker_threshold": 5}
    return [
        webhook("down", hooks["down"].url, **quick),
        webhook("errors", hooks["errors"].url, **quick),
        webhook("slow", hooks["slow"].url, **quick),  # it answers after 1.5 s
        # Long enough to read the whole 128 MiB if the sender tried (it must not).
        webhook("huge", hooks["huge"].url, **{**quick, "timeout_s": 5}),
        webhook("gone", hooks["gone"].url, **{**quick, "concurrency": 1}),
    ]


def extension_push(n: int) -> dict[str, str]:
    return {"event": "extensionstatus", "exten": f"3{n:05d}", "status": "0", "statustext": "x"}


def disabled_in_store(data_dir: Path, sink: str) -> bool:
    """The sink's disabled mark as written in the outbox (opened read-only)."""
    uri = f"file:{data_dir / 'outbox.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        row = conn.execute(
            "SELECT disabled_reason FROM sink_cursors WHERE sink = ?", (sink,)
        ).fetchone()
    return row is not None and row[0] is not None


async def test_sink_receiver_faults(tmp_path: Path) -> None:
    """Receivers that are down, answer 500, answer too late, answer 200 with 128 MiB, or 410:
    each working sink ends with every event delivered, the 128 MiB bodies do not grow the
    daemon, and the 410'd sink stays disabled through a SIGKILL and receives nothing more."""
    figures = Figures("sink_receiver_faults")
    hooks = {
        "down": Hook([("ok", 1)]),  # nothing listens until after the kill
        "errors": Hook([("error", 12), ("ok", 1)]),
        "slow": Hook([("slow", 8), ("ok", 1)], slow_s=1.5),
        "huge": Hook([("huge", 24), ("ok", 1)]),
        "gone": Hook([("gone", 1)]),
    }
    working = ["down", "errors", "slow", "huge"]
    for name in ("errors", "slow", "huge", "gone"):
        await hooks[name].up()
    daemon = await start_daemon(tmp_path, {"sources": [COOCENTER], "sinks": fault_sinks(hooks)})
    statuses: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession() as http:

            async def push_phase(first: int) -> None:
                for n in range(first, first + FAULT_PUSHES):
                    url = f"{daemon.url}/ingest/coocenter"
                    async with http.post(url, json=extension_push(n)) as response:
                        statuses[response.status] += 1

            def caught_up(names: list[str], ids: set[str]) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    shown = await sinks(http, daemon.url)
                    return all(
                        shown[name]["lag"] == 0 and ids <= set(hooks[name].delivered)
                        for name in names
                    )

                return check

            await push_phase(0)
            before = {event["id"] for event in await all_events(http, daemon.url)}

            async def gone_disabled() -> bool:
                shown = await sinks(http, daemon.url)
                return bool(shown["gone"]["disabled"]) and disabled_in_store(
                    daemon.data_dir, "gone"
                )

            async def down_failing() -> bool:
                return (await sinks(http, daemon.url))["down"]["last_error"] is not None

            await until_true(gone_disabled, timeout_s=10, what="the 410 to disable 'gone'")
            await until_true(down_failing, timeout_s=10, what="'down' to fail")
            ready = caught_up(["errors", "slow", "huge"], before)
            await until_true(ready, timeout_s=20, what="the failing receivers to get everything")
            huge_phase_rss = figures.sample(daemon)
            assert len(hooks["huge"].huge_sent) == 24  # the whole huge phase was played
            await daemon.kill()  # with 'down' still holding its backlog

            daemon = await restart(daemon)

            async def still_disabled() -> bool:
                return bool((await sinks(http, daemon.url))["gone"]["disabled"])

            await until_true(still_disabled, timeout_s=5, what="'gone' disabled after restart")
            await hooks["down"].up()
            await push_phase(FAULT_PUSHES)
            every = {event["id"] for event in await all_events(http, daemon.url)}
            await until_true(
                caught_up(working, every), timeout_s=30, what="every sink to get everything"
            )
            shown = await sinks(http, daemon.url)
            figures.sample(daemon)
        assert await daemon.stop() == 0
    finally:
        for hook in hooks.values():
            await hook.down()

    figures.acked = statuses[200]
    figures.lost = sum(len(every - set(hooks[name].delivered)) for name in working)
    figures.doubled = 0
    figures.server_errors = sum(n for status, n in statuses.items() if status >= 500)
    figures.extra = {
        "events": len(every),
        "delivered_twice": sum(
            count - 1 for name in working for count in hooks[name].delivered.values()
        ),
        "huge_bodies": len(hooks["huge"].huge_sent),
        "huge_max_sent_mib": f"{max(hooks['huge'].huge_sent) / (1 << 20):.0f}",
        "rss_huge_phase_mib": f"{huge_phase_rss:.1f}",
        "gone_requests": len(hooks["gone"].hits),
        "slow_timed_out": sum(1 for mode, _ in hooks["slow"].hits if mode == "slow"),
        "dead_letters": sum(shown[name]["dead"] for name in working),
    }
    figures.print()
    assert statuses == {200: 2 * FAULT_PUSHES}
    assert figures.lost == 0
    assert figures.rss_mib < RSS_BOUND_MIB
    assert max(hooks["huge"].huge_sent) < HUGE_BODY_BYTES  # hung up, did not read it all
    assert hooks["slow"].late == 0  # gave up on the slow answers at timeout_s
    assert len(hooks["gone"].hits) == 1  # one 410, then nothing, through the restart
    assert shown["gone"]["disabled"]
    assert figures.extra["dead_letters"] == 0
    assert all(hook.bad_signatures == 0 for hook in hooks.values())


# -- 6. SIGTERM with subscribers that do not read ------------------------------------------

SUBSCRIBERS = 3  # of each kind
BIG_PUSHES = 40
BIG_PAD = "y" * 200_000  # 40 events of 200 kB: far more than the sockets' buffers hold
STOP_WITHIN_S = 1.5
BACKED_UP_BYTES = 64 << 10


OPENING = {
    "ws": lambda: request(
        b"GET",
        b"/v1/ws?after=0",
        *WS_UPGRADE,
        b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)),
        close=False,
    ),
    "sse": lambda: request(b"GET", b"/v1/events/stream?after=0", close=False),
}
OPENED = {"ws": b"HTTP/1.1 101 Switching Protocols", "sse": b"HTTP/1.1 200 OK"}


async def test_sigterm_with_subscribers(tmp_path: Path) -> None:
    """SIGTERM with three WebSocket and three SSE subscribers that stopped reading (the
    daemon's writes to them are stuck): the process still exits 0 within 1.5 s."""
    figures = Figures("sigterm_with_subscribers")
    kinds = ("ws", "sse")
    daemon = await start_daemon(tmp_path, {"sources": [COOCENTER]})
    assert daemon.proc is not None
    stalled = []
    try:
        for kind in kinds:
            for _ in range(SUBSCRIBERS):
                stalled.append(await stalled_subscriber(daemon.port, OPENING[kind]()))
        heads = [head.split(b"\r\n", 1)[0] for _, head in stalled]
        assert heads == [OPENED[kind] for kind in kinds for _ in range(SUBSCRIBERS)]
        statuses: Counter[int] = Counter()
        acked = []
        async with aiohttp.ClientSession() as http:
            _, ready = await readyz(http, daemon.url)
            assert ready["subscribers"] == len(stalled)
            for n in range(BIG_PUSHES):
                push = {"event": "extensionstatus", "exten": f"4{n:04d}", "status": "0"}
                push["statustext"] = BIG_PAD
                async with http.post(f"{daemon.url}/ingest/coocenter", json=push) as response:
                    statuses[response.status] += 1
                    if response.status == 200:
                        acked.append(push["exten"])
        ports = {sock.getsockname()[1] for sock, _ in stalled}

        def backed_up() -> dict[int, int]:
            return {
                remote: tx
                for local, remote, tx, _ in loopback_tcp()
                if local == daemon.port and remote in ports and tx >= BACKED_UP_BYTES
            }

        await until(
            lambda: len(backed_up()) == len(ports),
            timeout_s=10,
            what="the daemon's writes to every subscriber to back up",
        )
        queued = sum(backed_up().values())
        figures.sample(daemon)
        began = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.proc.wait(), timeout=30)
        stop_s = time.monotonic() - began
        assert await daemon.stop() == code
    finally:
        for sock, _ in stalled:
            sock.close()

    uri = f"file:{daemon.data_dir / 'outbox.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        bodies = [json.loads(body) for (body,) in conn.execute("SELECT body FROM events")]
    stored = Counter(body["data"]["raw"]["exten"] for body in bodies)
    figures.acked = len(acked)
    figures.lost = sum(1 for exten in acked if not stored[exten])
    figures.doubled = sum(1 for exten in acked if stored[exten] > 1)
    figures.server_errors = sum(n for status, n in statuses.items() if status >= 500)
    figures.extra = {
        **{f"{kind}_subscribers": SUBSCRIBERS for kind in kinds},
        "stuck_in_socket_buffers_mib": f"{queued / (1 << 20):.1f}",
        "exit_code": code,
        "stop_s": f"{stop_s:.2f}",
    }
    figures.print()
    assert (figures.lost, figures.doubled, figures.server_errors) == (0, 0, 0)
    assert any(line.get("event") == "stopped" for line in daemon.lines)
    assert code == 0
    assert stop_s < STOP_WITHIN_S
