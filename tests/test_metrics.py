"""/metrics, the throttled refusal warnings and the activity line, on a real daemon on loopback.

One daemon runs sources of every vendor (a realtime one against the simulated Coral STOMP
server) and a webhook sink to a real receiver; the simulators push call lifecycles into it.
"""

from __future__ import annotations

import asyncio
import io
import json
import platform
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from bridge import __version__, metrics
from bridge.activity import Activity, report
from bridge.app import Daemon
from bridge.histogram import Histogram
from bridge.simulate import callog, coocenter, coral, oncall
from bridge.simulate.common import Report
from bridge.simulate.coral_realtime import RealtimeServer
from bridge.throttle import Throttle
from tests.conftest import base_url, daemon_config, until, until_true
from tests.receiver import SECRET, Receiver, serve
from tests.test_stomp_client import BRIDGE as ANSWERED  # a leg answered on the console

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"
UNKNOWN_NAME = "no-such-pbx"
# The pushes the fixture makes besides the simulators': the late ring, the bad push.
EXTRA = {"coocenter": {"200": 1, "400": 1}}
SETTLE_S = 3600  # no miss is decided while a test runs: the outbox holds still once pushed


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Scrape:
    families: dict[str, Any]  # name (without _total) -> family
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def series(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]

    def names(self) -> set[str]:
        """Every name a query may use: each sample's, and each family's by its type."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
            "info": ("_info",),
        }
        names = {s.name for s in self.samples}
        for name, family in self.families.items():
            names.update(name + suffix for suffix in suffixes.get(family.type, ("",)))
        return names


async def scrape(daemon: Daemon) -> Scrape:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = [sample for family in families.values() for sample in family.samples]
    return Scrape(families, samples)


async def get(url: str, **kwargs: Any) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, **kwargs) as response:
            await response.read()
            return response.status


def realtime_source(url: str) -> dict[str, Any]:
    return {
        "name": "coral-rt",
        "vendor": "coral",
        "realtime": {
            "url": url,
            "destinations": ["/topic/OC_778"],
            "heartbeat_ms": [100, 100],
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "connect_timeout_s": 5,
        },
    }


def sources(realtime_url: str) -> list[dict[str, Any]]:
    return [
        {"name": "coocenter", "vendor": "coocenter"},
        {"name": "oncall", "vendor": "oncall", "missed_settle_s": SETTLE_S},
        {"name": "callog", "vendor": "callog", "missed_settle_s": SETTLE_S},
        {"name": "coral", "vendor": "coral", "missed_settle_s": SETTLE_S},
        realtime_source(realtime_url),
    ]


def hook(receiver: Receiver) -> dict[str, Any]:
    return {"name": "crm", "type": "webhook", "url": receiver.url, "secrets": [SECRET]}


# -- the whole daemon, busy ------------------------------------------------------------------


def statuses(daemon: Daemon) -> int:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE type = 'source.status'"
        ).fetchone()
        return int(count)


@dataclass
class Busy:
    """A daemon after a simulated day: every vendor's calls, one unknown push, one bad push,
    a realtime message and a realtime gap; the sink has delivered everything."""

    daemon: Daemon
    receiver: Receiver
    reports: dict[str, Report]
    scrape: Scrape


@pytest.fixture
async def rt_server() -> AsyncIterator[RealtimeServer]:
    async with RealtimeServer(heartbeat_ms=(100, 100)) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


async def simulate_every_vendor(daemon: Daemon) -> dict[str, Report]:
    base = base_url(daemon) + "/ingest/"
    common: dict[str, Any] = {
        "calls": 4,
        "rate": 500,
        "seed": 7,
        "out": io.StringIO(),
        "retransmit_s": 0.01,
        "duplicate_ratio": 0.3,
    }
    runs = await asyncio.gather(
        coocenter.run(url=base + "coocenter", webkey=None, **common),
        oncall.run(url=base + "oncall", **common),
        callog.run(url=base + "callog", **common),
        coral.run(url=base + "coral", **common),
    )
    return dict(zip(("coocenter", "oncall", "callog", "coral"), runs, strict=True))


def late_ring(call_id: str) -> dict[str, Any]:
    """A CooCenter dialbegin for a call that has ended: a late call.ringing."""
    return {
        "event": "dialbegin",
        "timestamp": str(int(time.time()) + 60),
        "channel": "DAHDI/i1/18782985586-51",
        "calleridnum": "18782985586",
        "destcalleridnum": "8999",
        "destuniqueid": f"{call_id}.8999",
        "uniqueid": call_id,
    }


@pytest.fixture
async def busy(
    tmp_path: Path, rt_server: RealtimeServer, receiver: Receiver
) -> AsyncIterator[Busy]:
    config = daemon_config(tmp_path, sources=sources(rt_server.url), sinks=[hook(receiver)])
    async with Daemon(config) as daemon:
        await until(lambda: rt_server.subscribers == 1, what="realtime subscription")
        reports = await simulate_every_vendor(daemon)
        ended = reports["coocenter"].calls[0].call_id
        assert await get(base_url(daemon) + "/ingest/coocenter", json=late_ring(ended)) == 200
        assert await get(base_url(daemon) + f"/ingest/{UNKNOWN_NAME}", data=b"{}") == 404
        assert await get(base_url(daemon) + "/ingest/coocenter", data=b"not json") == 400
        assert await rt_server.publish("/topic/OC_778", ANSWERED) == 1
        (realtime,) = daemon.realtime
        await until(lambda: realtime.status.messages == 1, what="realtime message")
        rt_server.drop_all()
        await until(lambda: statuses(daemon) == 3, what="the reconnect committed")
        (sink,) = daemon.sinks

        def delivered_all() -> bool:
            shown = sink.snapshot(daemon.writer.last_seq)
            done = (shown["lag"], shown["in_flight"], shown["delivered"])
            return bool(done == (0, 0, daemon.writer.last_seq))

        await until(delivered_all, timeout_s=30, what="every event delivered")
        yield Busy(daemon, receiver, reports, await scrape(daemon))


def stored_counts(daemon: Daemon) -> Counter[tuple[str, str, str]]:
    """(source name, vendor, type) -> events in the outbox."""
    with sqlite3.connect(daemon.config.storage.path) as conn:
        rows = conn.execute("SELECT source, type, count(*) FROM events GROUP BY source, type")
        counts: Counter[tuple[str, str, str]] = Counter()
        for source, kind, count in rows:
            vendor, name = source.strip("/").split("/")
            counts[(name, vendor, kind)] = count
        return counts


async def test_events_are_counted_by_source_vendor_and_type(busy: Busy) -> None:
    """pbx_bridge_events_committed_by_type matches the outbox row for row, call.answered too."""
    shown = Counter(
        {
            (s.labels["source"], s.labels["vendor"], s.labels["type"]): int(s.value)
            for s in busy.scrape.series("pbx_bridge_events_committed_by_type_total")
        }
    )
    stored = stored_counts(busy.daemon)
    assert shown == stored
    assert {vendor for _, vendor, kind in shown if kind == "call.answered"} >= {"oncall", "coral"}
    assert shown[("coral-rt", "coral", "source.status")] == 3  # connected, disconnected, again
    total = busy.scrape.value("pbx_bridge_events_committed_total")
    assert total == sum(stored.values()) == busy.daemon.writer.last_seq


async def test_duplicates_absorbed_and_late_events_are_counted(busy: Busy) -> None:
    """The simulators' retransmissions show as duplicates; late events as the outbox has them."""
    assert sum(r.duplicates + r.retransmitted for r in busy.reports.values()) > 0
    assert busy.scrape.value("pbx_bridge_events_duplicate_total") >= 1
    with sqlite3.connect(busy.daemon.config.storage.path) as conn:
        (late,) = conn.execute(
            "SELECT count(*) FROM events WHERE json_extract(body, '$.data.late')"
        ).fetchone()
    assert late >= 1  # the ring after the end, at least
    assert busy.scrape.value("pbx_bridge_call_events_late_total") == late


async def test_ingest_answers_are_counted_per_source_and_status(busy: Busy) -> None:
    """Every request a simulator made is counted under its source and the status it got."""
    for name, run in busy.reports.items():
        counted = {
            s.labels["status"]: int(s.value)
            for s in busy.scrape.series("pbx_bridge_ingest_requests_total")
            if s.labels["source"] == name
        }
        assert counted == dict(Counter(run.statuses) + Counter(EXTRA.get(name, {})))


async def test_an_unknown_source_is_counted_under_a_fixed_label(busy: Busy) -> None:
    """A push to no configured source is counted as source="_unknown"; its name is no label."""
    assert busy.scrape.value("pbx_bridge_ingest_requests_total", source="_unknown", status="404")
    assert busy.scrape.value("pbx_bridge_ingest_seconds_count", source="_unknown") == 1
    assert not [s for s in busy.scrape.samples if UNKNOWN_NAME in s.labels.values()]


async def test_the_ingest_histogram_counts_every_request(busy: Busy) -> None:
    """pbx_bridge_ingest_seconds has one observation per request, in cumulative buckets."""
    for name, run in busy.reports.items():
        extra = sum(EXTRA.get(name, {}).values())
        count = busy.scrape.value("pbx_bridge_ingest_seconds_count", source=name)
        assert count == run.sent + extra
        buckets = [
            s
            for s in busy.scrape.series("pbx_bridge_ingest_seconds_bucket")
            if s.labels["source"] == name
        ]
        values = [s.value for s in buckets]
        assert values == sorted(values)
        assert buckets[-1].labels["le"] == "+Inf"
        assert values[-1] == count
        assert busy.scrape.value("pbx_bridge_ingest_seconds_sum", source=name) > 0


async def test_commit_latency_and_batch_size_are_per_transaction(busy: Busy) -> None:
    """Both commit histograms count each outbox transaction once."""
    commits = busy.scrape.value("pbx_bridge_commits_total")
    assert commits == busy.daemon.writer.commits > 0
    assert busy.scrape.value("pbx_bridge_commit_seconds_count") == commits
    assert busy.scrape.value("pbx_bridge_commit_events_count") == commits
    # Every transaction carried at least one event, and not more than were sent.
    events = busy.scrape.value("pbx_bridge_commit_events_sum")
    assert commits <= events
    assert busy.scrape.value("pbx_bridge_commit_events_bucket", le="+Inf") == commits


async def test_the_sink_shows_its_deliveries(busy: Busy) -> None:
    """Lag 0, everything delivered once, a delivery latency per event, the breaker closed."""
    scrape, head = busy.scrape, busy.daemon.writer.last_seq
    assert scrape.value("pbx_bridge_sink_lag_events", sink="crm") == 0
    assert scrape.value("pbx_bridge_sink_delivered_total", sink="crm") == head
    assert len(busy.receiver.delivered()) == head
    assert scrape.value("pbx_bridge_sink_delivery_seconds_count", sink="crm") == head
    assert scrape.value("pbx_bridge_sink_retried_total", sink="crm") == 0
    assert scrape.value("pbx_bridge_sink_dead_lettered_total", sink="crm") == 0
    assert scrape.value("pbx_bridge_sink_breaker_open", sink="crm") == 0
    assert scrape.value("pbx_bridge_sink_breaker_state", sink="crm", state="closed") == 1
    assert scrape.value("pbx_bridge_sink_breaker_state", sink="crm", state="open") == 0
    assert "pbx_bridge_sink_published" in scrape.families  # NATS: no such sink configured


async def test_realtime_connection_and_gaps_are_shown(busy: Busy) -> None:
    """The realtime source is connected again after one gap, whose seconds are counted."""
    scrape = busy.scrape
    assert scrape.value("pbx_bridge_realtime_connected", source="coral-rt") == 1
    assert scrape.value("pbx_bridge_realtime_messages_total", source="coral-rt") == 1
    assert scrape.value("pbx_bridge_realtime_connects_total", source="coral-rt") == 2
    assert scrape.value("pbx_bridge_realtime_disconnects_total", source="coral-rt") == 1
    assert scrape.value("pbx_bridge_realtime_gaps_total", source="coral-rt") == 1
    assert scrape.value("pbx_bridge_realtime_gap_seconds_total", source="coral-rt") > 0


async def test_an_open_gap_counts_while_it_lasts_and_the_counter_never_falls(
    tmp_path: Path, rt_server: RealtimeServer
) -> None:
    """While the stream is down its seconds grow; the reconnect does not take any back."""
    async with Daemon(daemon_config(tmp_path, sources=[realtime_source(rt_server.url)])) as daemon:
        await until(lambda: rt_server.subscribers == 1, what="realtime subscription")
        rt_server.refuse = 1_000_000  # every reconnect is answered with an ERROR frame
        rt_server.drop_all()
        (realtime,) = daemon.realtime
        await until(lambda: not realtime.status.connected, what="the drop")

        async def down_s() -> float:
            return (await scrape(daemon)).value(
                "pbx_bridge_realtime_gap_seconds_total", source="coral-rt"
            )

        first = await down_s()
        seen = [first]

        async def grew() -> bool:
            seen.append(await down_s())
            return seen[-1] > first

        await until_true(grew, what="the open gap growing")
        during = await scrape(daemon)
        assert during.value("pbx_bridge_realtime_connected", source="coral-rt") == 0
        assert during.value("pbx_bridge_realtime_gaps_total", source="coral-rt") == 0
        before_reconnect = during.value("pbx_bridge_realtime_gap_seconds_total", source="coral-rt")
        rt_server.refuse = 0
        await until(lambda: realtime.status.gaps == 1, what="the reconnect")
        after = await scrape(daemon)
        assert after.value("pbx_bridge_realtime_gaps_total", source="coral-rt") == 1
        assert after.value("pbx_bridge_realtime_gap_seconds_total", source="coral-rt") >= (
            before_reconnect
        )
        assert seen == sorted(seen)


async def test_quarantine_held_entries_per_source(busy: Busy) -> None:
    """The one bad push is held for coocenter; every other configured source holds none."""
    held = {
        s.labels["source"]: s.value
        for s in busy.scrape.series("pbx_bridge_quarantine_held_entries")
    }
    assert held == {"coocenter": 1, "oncall": 0, "callog": 0, "coral": 0, "coral-rt": 0}
    assert busy.scrape.value("pbx_bridge_quarantine_held_bytes", source="coocenter") == len(
        b"not json"
    )


async def test_process_python_and_build_info_are_exposed(busy: Busy) -> None:
    """Process memory and CPU, Python's GC and version, and the bridge's version."""
    scrape = busy.scrape
    assert scrape.value("process_resident_memory_bytes") > 0
    assert scrape.value("process_cpu_seconds_total") > 0
    assert scrape.series("python_gc_collections_total")
    assert scrape.series("python_info")
    info = scrape.value(
        "pbx_bridge_build_info", version=__version__, python=platform.python_version()
    )
    assert info == 1


async def test_subscribers_counts_only_sse_and_websocket_clients(busy: Busy) -> None:
    """A running webhook sink is no subscriber; a WebSocket or SSE client is one while there."""
    daemon = busy.daemon
    assert busy.scrape.value("pbx_bridge_subscribers") == 0
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(base_url(daemon) + "/v1/ws"):
            await until(lambda: daemon.hub.subscribers == 1, what="WebSocket subscription")
            assert (await scrape(daemon)).value("pbx_bridge_subscribers") == 1
        await until(lambda: daemon.hub.subscribers == 0, what="WebSocket gone")
        assert (await scrape(daemon)).value("pbx_bridge_subscribers") == 0
        async with http.get(base_url(daemon) + "/v1/events/stream") as stream:
            assert stream.status == 200
            await until(lambda: daemon.hub.subscribers == 1, what="SSE subscription")
            assert (await scrape(daemon)).value("pbx_bridge_subscribers") == 1


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [*dashboard["panels"]]
    for panel in list(panels):
        panels.extend(panel.get("panels", []))  # rows that nest theirs
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


async def test_every_metric_the_dashboard_uses_is_exposed(busy: Busy) -> None:
    """The dashboard cannot drift: each name in its queries is in a scrape."""
    queries = dashboard_queries()
    assert len(queries) >= 15
    used = {
        name
        for query in queries
        for name in re.findall(r"\b(?:pbx_bridge|process|python)_[a-z0-9_]+", query)
    }
    assert {"pbx_bridge_events_committed_by_type_total", "pbx_bridge_ingest_seconds_bucket"} <= used
    assert used - busy.scrape.names() == set()


def test_the_dashboard_is_importable() -> None:
    """Grafana's import needs a schema version, a uid, panels with ids, and the datasource."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


# -- refused pushes: counted always, logged rate-limited -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Clock]]:
    token = {"type": "token", "token": "s3cret-t0ken"}
    config = daemon_config(
        tmp_path, sources=[{"name": "callog", "vendor": "callog", "auth": token}]
    )
    async with Daemon(config) as daemon:
        clock = Clock()
        daemon.ingest.refused_log = Throttle(10.0, clock=clock)
        yield daemon, clock


def refused(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == "ingest_refused"]


async def test_unknown_source_pushes_are_logged_once_per_interval(
    guarded: tuple[Daemon, Clock],
) -> None:
    """A flood to unknown names logs one warning (with the name), then one with the count."""
    daemon, clock = guarded
    with capture_logs() as logs:
        for n in range(5):
            assert await get(base_url(daemon) + f"/ingest/probe-{n}") == 404
        assert [(line["name"], line.get("suppressed")) for line in refused(logs)] == [
            ("probe-0", None)
        ]
        clock.now += 10.0
        assert await get(base_url(daemon) + "/ingest/probe-5") == 404
    lines = refused(logs)
    assert (lines[-1]["name"], lines[-1]["suppressed"], lines[-1]["log_level"]) == (
        "probe-5",
        4,
        "warning",
    )
    scrape_ = await scrape(daemon)
    assert scrape_.value("pbx_bridge_ingest_requests_total", source="_unknown", status="404") == 6


async def test_failed_authentication_is_logged_once_per_interval_per_source(
    guarded: tuple[Daemon, Clock],
) -> None:
    """Bad tokens are all answered 401 and counted, but warned about once per interval."""
    daemon, _ = guarded
    with capture_logs() as logs:
        for n in range(4):
            assert await get(base_url(daemon) + f"/ingest/callog?token=wrong-{n}") == 401
        assert await get(base_url(daemon) + "/ingest/nowhere") == 404  # another kind: its own
    lines = refused(logs)
    assert [(line.get("source"), line["reason"]) for line in lines] == [
        ("callog", "missing or wrong token"),
        (None, "unknown_source"),
    ]
    assert (await scrape(daemon)).value(
        "pbx_bridge_ingest_requests_total", source="callog", status="401"
    ) == 4


async def test_each_push_gets_a_debug_line(tmp_path: Path) -> None:
    """At debug level every answered push is logged with source, status, events and ms."""
    import logging

    logger = logging.getLogger("bridge.ingest")
    before = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with Daemon(daemon_config(tmp_path)) as daemon:
            push = {"event": "extensionstatus", "exten": "801", "status": "0", "statustext": "Idle"}
            with capture_logs() as logs:
                assert await get(base_url(daemon) + "/ingest/coocenter", json=push) == 200
                assert await get(base_url(daemon) + "/ingest/coocenter", data=b"[") == 400
    finally:
        logger.setLevel(before)
    lines = [line for line in logs if line["event"] == "ingest_answered"]
    assert [(line["source"], line["status"], line["events"]) for line in lines] == [
        ("coocenter", 200, 1),
        ("coocenter", 400, 0),
    ]
    assert all(line["log_level"] == "debug" and line["ms"] >= 0 for line in lines)


# -- the activity line ------------------------------------------------------------------------


async def push_calls(daemon: Daemon, calls: int) -> Report:
    url = base_url(daemon) + "/ingest/coocenter"
    return await coocenter.run(
        url=url, calls=calls, rate=500, webkey=None, seed=3, out=io.StringIO(), duplicate_ratio=0
    )


async def test_activity_says_what_each_source_did_since_the_last_line(tmp_path: Path) -> None:
    """Pushes and committed events per source since the previous call; None when idle."""
    async with Daemon(daemon_config(tmp_path)) as daemon:
        activity = Activity(daemon)
        assert activity.since_last() is None
        run = await push_calls(daemon, 2)
        assert await get(base_url(daemon) + "/ingest/elsewhere") == 404
        assert activity.since_last() == {
            "pushes": {"_unknown": 1, "coocenter": run.sent},
            "events": {"coocenter": daemon.writer.last_seq},
        }
        assert activity.since_last() is None  # nothing since


async def test_report_logs_activity_lines_until_cancelled(tmp_path: Path) -> None:
    """report() logs `activity` at info; over its lines the counts add up to what happened."""
    async with Daemon(daemon_config(tmp_path)) as daemon:
        with capture_logs() as logs:
            task = asyncio.create_task(report(daemon, interval_s=0.01))
            run = await push_calls(daemon, 2)

            def lines() -> list[Mapping[str, Any]]:
                return [line for line in logs if line["event"] == "activity"]

            def pushes() -> int:
                return sum(line.get("pushes", {}).get("coocenter", 0) for line in lines())

            def events() -> int:
                return sum(line.get("events", {}).get("coocenter", 0) for line in lines())

            await until(lambda: pushes() == run.sent and events() == daemon.writer.last_seq)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert all(line["log_level"] == "info" and line["interval_s"] == 0.01 for line in lines())
        assert all("pushes" in line or "events" in line for line in lines())


# -- the pure parts ---------------------------------------------------------------------------


def test_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    """First through (0 held), then held until the interval passes, then through with the count."""
    clock = Clock()
    throttle = Throttle(10.0, clock=clock)
    assert throttle.allow("k") == 0
    assert throttle.allow("k") is None
    clock.now += 9.9
    assert throttle.allow("k") is None
    clock.now += 0.1
    assert throttle.allow("k") == 2
    assert throttle.allow("k") is None
    clock.now += 10.0
    assert throttle.allow("k") == 1


def test_throttle_keys_are_independent() -> None:
    """A key held back does not hold back another."""
    throttle = Throttle(10.0, clock=Clock())
    assert throttle.allow(("auth", "a")) == 0
    assert throttle.allow(("auth", "b")) == 0
    assert throttle.allow(("auth", "a")) is None


def test_throttle_log_adds_suppressed_only_when_some_were() -> None:
    """log() emits through the given method, with suppressed=N once lines were held back."""
    clock = Clock()
    throttle = Throttle(5.0, clock=clock)
    emitted: list[tuple[str, dict[str, Any]]] = []

    def emit(event: str, **fields: Any) -> None:
        emitted.append((event, fields))

    assert throttle.log("k", emit, "login_failed", user="x")
    assert not throttle.log("k", emit, "login_failed", user="y")
    assert not throttle.log("k", emit, "login_failed", user="z")
    clock.now += 5.0
    assert throttle.log("k", emit, "login_failed", user="w")
    assert emitted == [
        ("login_failed", {"user": "x"}),
        ("login_failed", {"user": "w", "suppressed": 2}),
    ]


def test_throttle_forgets_the_oldest_key_past_max_keys() -> None:
    """The table is bounded: a key pushed out is treated as new."""
    throttle = Throttle(10.0, clock=Clock(), max_keys=2)
    assert throttle.allow("a") == 0
    assert throttle.allow("b") == 0
    assert throttle.allow("c") == 0  # "a" forgotten
    assert throttle.allow("b") is None
    assert throttle.allow("a") == 0


def test_histogram_buckets_are_le_and_cumulative() -> None:
    """A value on a bound counts in that bucket; above the last bound, in +Inf."""
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(8.65)


def test_process_metrics_survive_a_hidden_proc_stat(tmp_path: Path) -> None:
    """Under systemd's ProcSubset=pid only the process directories of /proc are visible: the
    process metrics must still be there, with the right start time."""
    (tmp_path / "self").symlink_to("/proc/self")  # a /proc with this process and no stat file
    hidden = CollectorRegistry()
    metrics._Process(registry=hidden, proc=str(tmp_path))
    full = CollectorRegistry()
    metrics._Process(registry=full)
    started = hidden.get_sample_value("process_start_time_seconds")
    assert started is not None
    assert hidden.get_sample_value("process_resident_memory_bytes")
    expected = full.get_sample_value("process_start_time_seconds")
    assert expected is not None
    assert abs(started - expected) < 2.0
