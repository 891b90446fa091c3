"""``/metrics`` in the Prometheus text format.

The hot path only bumps plain integers and bucket arrays (:class:`~bridge.histogram.Histogram`)
on the objects that own them (writer, ingest, hub, sinks, sources); this collector reads them at
scrape time, so metrics cost next to nothing per event. The one read that is not in memory, the
quarantine's held entries, is made by the handler before the collector runs (on a reader thread).

Labels come from the config (source, sink, service names) or from the bridge's own vocabulary
(event types, statuses), never from what a client sent: a push to a source that is not
configured is counted under ``source="_unknown"``. The process and Python collectors keep their
standard names (``process_*``, ``python_*``), which dashboards already know.
"""

from __future__ import annotations

import asyncio
import platform
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.api.access import Access
from bridge.api.hub import Hub
from bridge.commands.repair import Repairer
from bridge.commands.service import Commander
from bridge.histogram import Histogram
from bridge.lifecycle import Supervisor
from bridge.server import Server
from bridge.sinks.sink import Sink
from bridge.sinks.webhook import WebhookSink
from bridge.sources.http import Ingest
from bridge.sources.quarantine import Quarantine
from bridge.sources.stomp import StompSource
from bridge.store.writer import Writer

log = structlog.get_logger("bridge.metrics")

# A scrape does not wait longer than this for the quarantine's counts (the reader is busy).
HELD_TIMEOUT_S: Final = 2.0
BREAKER_STATES: Final = ("closed", "open", "half_open")

Held = dict[str, dict[str, int]]  # source -> held_entries, held_bytes (Quarantine.usage)


class Observed(Protocol):
    """What the collector reads: the daemon's parts (the daemon satisfies it)."""

    writer: Writer
    hub: Hub
    ingest: Ingest
    supervisor: Supervisor
    quarantine: Quarantine
    server: Server
    realtime: list[StompSource]
    sinks: list[Sink]
    access: Access
    reloads: int
    reload_failures: int
    commander: Commander
    repairer: Repairer


class BridgeCollector(Collector):
    def __init__(self, daemon: Observed) -> None:
        self._daemon = daemon
        self.held: Held | None = None  # set by the handler before each scrape

    def collect(self) -> Iterator[Metric]:
        daemon = self._daemon
        yield _build_info()
        yield from _ingest(daemon.ingest)
        yield from _outbox(daemon.writer)
        yield from _fan_out(daemon.hub)
        yield from _realtime(daemon.realtime)
        yield from _quarantine(daemon.quarantine, self.held)
        yield GaugeMetricFamily(
            "pbx_bridge_http_connections", "Open client connections", daemon.server.connections
        )
        yield CounterMetricFamily(
            "pbx_bridge_http_connections_refused",
            "Connections refused over server.max_connections",
            daemon.server.refused,
        )
        yield from _services(daemon.supervisor)
        yield from _sinks(daemon.sinks, daemon.writer.last_seq)
        yield CounterMetricFamily(
            "pbx_bridge_api_refused",
            "API calls answered 401 (no valid token) or 403 (a scope missing)",
            daemon.access.refused,
        )
        yield from _commands(daemon.commander, daemon.repairer)
        yield CounterMetricFamily(
            "pbx_bridge_reloads", "Configuration reloads applied", daemon.reloads
        )
        yield CounterMetricFamily(
            "pbx_bridge_reload_failures",
            "Reloads refused (an invalid config: the running one went on)",
            daemon.reload_failures,
        )


def _build_info() -> Metric:
    info = GaugeMetricFamily(
        "pbx_bridge_build_info", "The running version (always 1)", labels=["version", "python"]
    )
    info.add_metric([__version__, platform.python_version()], 1)
    return info


def _histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    series: Iterable[tuple[list[str], Histogram]],
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, histogram in series:
        buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
        family.add_metric(values, buckets, histogram.sum)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _ingest(ingest: Ingest) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "pbx_bridge_ingest_requests",
        'Vendor requests answered, by source (pushes to no configured source: "_unknown")',
        labels=["source", "status"],
    )
    for (source, status), count in sorted(ingest.responses.items()):
        requests.add_metric([source, str(status)], count)
    yield requests
    yield _histogram(
        "pbx_bridge_ingest_seconds",
        "Vendor requests from their start to their answer written (ingest to ack)",
        ["source"],
        (([source], latency) for source, latency in sorted(ingest.latency.items())),
    )


def _outbox(writer: Writer) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "pbx_bridge_events_committed",
        "New events committed to the outbox",
        writer.committed_events,
    )
    by_type = CounterMetricFamily(
        "pbx_bridge_events_committed_by_type",
        "New events committed to the outbox, by source, vendor and type",
        labels=["source", "vendor", "type"],
    )
    for (source, kind), count in sorted(writer.committed_by.items()):
        vendor, _, name = source.strip("/").partition("/")  # an event source is /vendor/name
        by_type.add_metric([name, vendor, kind], count)
    yield by_type
    tally = writer.tally
    yield CounterMetricFamily(
        "pbx_bridge_events_duplicate",
        "Vendor retransmissions absorbed (already stored, or already in their call)",
        tally.duplicates,
    )
    yield CounterMetricFamily(
        "pbx_bridge_call_events_late",
        "Call events committed with data.late (after the end, or a ring after the answer)",
        tally.late,
    )
    yield CounterMetricFamily(
        "pbx_bridge_call_events_folded",
        "Call events folded into their call's record without an event of their own",
        tally.folded,
    )
    yield CounterMetricFamily(
        "pbx_bridge_calls_missed", "call.missed decisions committed", tally.missed
    )
    yield CounterMetricFamily(
        "pbx_bridge_calls_missed_revoked", "call.missed_revoked committed", tally.revoked
    )
    yield CounterMetricFamily(
        "pbx_bridge_missed_settle_failures",
        "Settle transactions (due missed-call decisions) that failed and will be retried",
        writer.settle_failures,
    )
    yield CounterMetricFamily("pbx_bridge_commits", "Outbox transactions", writer.commits)
    yield _histogram(
        "pbx_bridge_commit_seconds",
        "Outbox transactions (group commits) by their duration",
        [],
        [([], writer.commit_latency)],
    )
    yield _histogram(
        "pbx_bridge_commit_events",
        "Outbox transactions by the events submitted to them (duplicates included)",
        [],
        [([], writer.commit_events)],
    )
    yield CounterMetricFamily(
        "pbx_bridge_commit_failures", "Outbox transactions rolled back", writer.commit_failures
    )
    yield GaugeMetricFamily(
        "pbx_bridge_writer_pending_events",
        "Events waiting for the writer",
        writer.pending_events,
    )
    yield GaugeMetricFamily("pbx_bridge_outbox_last_seq", "Newest committed seq", writer.last_seq)
    yield GaugeMetricFamily("pbx_bridge_writer_up", "1 while the writer runs", int(writer.alive))


def _fan_out(hub: Hub) -> Iterator[Metric]:
    # Webhook and NATS sinks ring the hub's bell; they are not subscriptions, so not counted.
    yield GaugeMetricFamily(
        "pbx_bridge_subscribers", "Live SSE/WebSocket subscribers", hub.subscribers
    )
    yield CounterMetricFamily(
        "pbx_bridge_subscriber_overflows",
        "Times a slow subscriber was switched to catch-up from the outbox",
        hub.total_overflows,
    )


def _commands(commander: Commander, repairer: Repairer) -> Iterator[Metric]:
    concluded = CounterMetricFamily(
        "pbx_bridge_commands",
        "Commands to a PBX concluded, by outcome: succeeded, failed, unknown (never re-sent)",
        labels=["source", "outcome"],
    )
    for (source, outcome), count in sorted(commander.counts.items()):
        concluded.add_metric([source, outcome], count)
    yield concluded
    yield GaugeMetricFamily(
        "pbx_bridge_commands_in_flight", "Commands sent and not yet concluded", commander.in_flight
    )
    yield CounterMetricFamily(
        "pbx_bridge_command_logins", "Logins to PBX APIs (OnCall's token)", commander.driver.logins
    )
    yield CounterMetricFamily(
        "pbx_bridge_gap_repairs",
        "Calls ended from a PBX's active calls after a stream gap (learned_from: query)",
        repairer.repairs,
    )


def _realtime(sources: Sequence[StompSource]) -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "pbx_bridge_realtime_connected",
        "1 while a realtime source is subscribed",
        labels=["source"],
    )
    counters = {
        key: CounterMetricFamily(f"pbx_bridge_realtime_{key}", help_text, labels=["source"])
        for key, help_text in (
            ("messages", "Realtime messages received"),
            ("rejected", "Realtime messages that could not become events (quarantined if kept)"),
            ("lost", "Realtime messages (or their events) neither committed nor quarantined"),
            ("connects", "Realtime subscriptions established"),
            ("disconnects", "Realtime streams that went down"),
            ("gaps", "Realtime reconnects after a gap in the stream (one across a restart too)"),
            ("gap_seconds", "Seconds the realtime stream was down (the current gap included)"),
        )
    }
    for source in sources:
        status, label = source.status, [source.name]
        connected.add_metric(label, int(status.connected))
        gap_s = status.gap_s
        if not status.connected and status.since is not None:
            gap_s += max(0.0, time.monotonic() - status.since)  # a gap still open, as it grows
        values = {
            "messages": status.messages,
            "rejected": status.rejected,
            "lost": status.lost,
            "connects": status.connects,
            "disconnects": status.disconnects,
            "gaps": status.gaps,
            "gap_seconds": gap_s,
        }
        for key, family in counters.items():
            family.add_metric(label, values[key])
    yield connected
    yield from counters.values()


def _quarantine(quarantine: Quarantine, held: Held | None) -> Iterator[Metric]:
    kept = CounterMetricFamily(
        "pbx_bridge_quarantine_kept",
        "Payloads kept in quarantine (or a kept one seen again)",
        labels=["source"],
    )
    full = CounterMetricFamily(
        "pbx_bridge_quarantine_full",
        "Payloads refused (503) because their source's quarantine was full",
        labels=["source"],
    )
    for source, count in sorted(quarantine.kept.items()):
        kept.add_metric([source], count)
    for source, count in sorted(quarantine.full.items()):
        full.add_metric([source], count)
    yield kept
    yield full
    entries = GaugeMetricFamily(
        "pbx_bridge_quarantine_held_entries",
        "Payloads held in quarantine (waiting for a reprocess), per source",
        labels=["source"],
    )
    size = GaugeMetricFamily(
        "pbx_bridge_quarantine_held_bytes",
        "Body bytes held in quarantine, per source",
        labels=["source"],
    )
    for source, usage in sorted((held or {}).items()):
        entries.add_metric([source], usage["held_entries"])
        size.add_metric([source], usage["held_bytes"])
    yield entries
    yield size


def _services(supervisor: Supervisor) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "pbx_bridge_service_up", "1 while a supervised service runs", labels=["service"]
    )
    restarts = CounterMetricFamily(
        "pbx_bridge_service_restarts",
        "Times a supervised service died and was started again",
        labels=["service"],
    )
    for service in supervisor.services:
        up.add_metric([service.name], int(service.alive))
        restarts.add_metric([service.name], service.restarts)
    yield up
    yield restarts


def _sinks(sinks: Sequence[Sink], head: int) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "pbx_bridge_sink_lag_events", "Committed events past a sink's cursor", labels=["sink"]
    )
    counters = {
        key: CounterMetricFamily(f"pbx_bridge_sink_{key}", help_text, labels=["sink"])
        for key, help_text in (
            ("delivered", "Events a webhook receiver accepted"),
            ("retried", "Delivery attempts that will be retried"),
            ("dead_lettered", "Events given up on (kept as dead letters)"),
            ("expired", "Events dropped undelivered past their expire_s"),
            ("published", "Events JetStream acknowledged"),
        )
    }
    breaker = GaugeMetricFamily(
        "pbx_bridge_sink_breaker_open",
        "1 while a sink's circuit breaker is not closed",
        labels=["sink"],
    )
    state = GaugeMetricFamily(
        "pbx_bridge_sink_breaker_state",
        "1 for the state a sink's circuit breaker is in (closed, open, half_open)",
        labels=["sink", "state"],
    )
    latency: list[tuple[list[str], Histogram]] = []
    for sink in sinks:
        shown = sink.snapshot(head)
        lag.add_metric([sink.name], shown["lag"])
        for key, family in counters.items():
            if key in shown:
                family.add_metric([sink.name], shown[key])
        if "breaker" in shown:
            breaker.add_metric([sink.name], int(shown["breaker"] != "closed"))
            for name in BREAKER_STATES:
                state.add_metric([sink.name, name], int(shown["breaker"] == name))
        if isinstance(sink, WebhookSink):
            latency.append(([sink.name], sink.stats.latency))
    yield lag
    yield from counters.values()
    yield breaker
    yield state
    yield _histogram(
        "pbx_bridge_sink_delivery_seconds",
        "Webhook deliveries from the bridge receiving the event to the receiver's 2xx",
        ["sink"],
        latency,
    )


async def _held(quarantine: Quarantine) -> Held | None:
    try:
        async with asyncio.timeout(HELD_TIMEOUT_S):
            return await quarantine.usage()
    except (sqlite3.Error, TimeoutError) as exc:  # the scrape goes on without these gauges
        log.warning("metrics_quarantine_unread", error=f"{type(exc).__name__}: {exc}")
        return None


class _Process(ProcessCollector):
    """prometheus-client's process metrics, also where ``/proc/stat`` is hidden (systemd's
    ``ProcSubset=pid``): without the boot time from there, it would report nothing at all."""

    def _boot_time(self) -> float:
        try:
            return float(super()._boot_time())  # type: ignore[no-untyped-call]
        except OSError:
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def handler(daemon: Observed) -> Callable[[web.Request], Awaitable[web.Response]]:
    registry = CollectorRegistry(auto_describe=False)
    collector = BridgeCollector(daemon)
    registry.register(collector)
    # Our own instances, in our registry: the process's memory, CPU, open files; GC; Python.
    _Process(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    async def metrics(request: web.Request) -> web.Response:
        collector.held = await _held(daemon.quarantine)
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
