"""``/metrics`` in the Prometheus text format.

The hot path only bumps plain integers on the objects that own them (writer, ingest, hub);
this collector reads them at scrape time, so metrics cost nothing per event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.api.hub import Hub
from bridge.lifecycle import Supervisor
from bridge.server import Server
from bridge.sinks.sink import Sink
from bridge.sources.http import Ingest
from bridge.sources.quarantine import Quarantine
from bridge.sources.stomp import StompSource
from bridge.store.writer import Writer


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


class BridgeCollector(Collector):
    def __init__(self, daemon: Observed) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self._daemon
        writer, hub, ingest = daemon.writer, daemon.hub, daemon.ingest
        requests = CounterMetricFamily(
            "pbx_bridge_ingest_requests", "Vendor requests answered", labels=["source", "status"]
        )
        for (source, status), count in sorted(ingest.responses.items()):
            requests.add_metric([source, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "pbx_bridge_events_committed",
            "New events committed to the outbox",
            writer.committed_events,
        )
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
        yield CounterMetricFamily(
            "pbx_bridge_commit_seconds", "Time spent in outbox transactions", writer.commit_seconds
        )
        yield CounterMetricFamily(
            "pbx_bridge_commit_failures", "Outbox transactions rolled back", writer.commit_failures
        )
        yield GaugeMetricFamily(
            "pbx_bridge_writer_pending_events",
            "Events waiting for the writer",
            writer.pending_events,
        )
        yield GaugeMetricFamily(
            "pbx_bridge_outbox_last_seq", "Newest committed seq", writer.last_seq
        )
        yield GaugeMetricFamily(
            "pbx_bridge_writer_up", "1 while the writer runs", int(writer.alive)
        )
        yield GaugeMetricFamily(
            "pbx_bridge_subscribers", "Live SSE/WebSocket subscribers", hub.subscribers
        )
        connected = GaugeMetricFamily(
            "pbx_bridge_realtime_connected",
            "1 while a realtime source is subscribed",
            labels=["source"],
        )
        messages = CounterMetricFamily(
            "pbx_bridge_realtime_messages", "Realtime messages received", labels=["source"]
        )
        reconnects = CounterMetricFamily(
            "pbx_bridge_realtime_disconnects", "Realtime stream gaps", labels=["source"]
        )
        for realtime in daemon.realtime:
            connected.add_metric([realtime.name], int(realtime.status.connected))
            messages.add_metric([realtime.name], realtime.status.messages)
            reconnects.add_metric([realtime.name], realtime.status.disconnects)
        yield connected
        yield messages
        yield reconnects
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
        for source, count in sorted(daemon.quarantine.kept.items()):
            kept.add_metric([source], count)
        for source, count in sorted(daemon.quarantine.full.items()):
            full.add_metric([source], count)
        yield kept
        yield full
        yield GaugeMetricFamily(
            "pbx_bridge_http_connections", "Open client connections", daemon.server.connections
        )
        yield CounterMetricFamily(
            "pbx_bridge_http_connections_refused",
            "Connections refused over server.max_connections",
            daemon.server.refused,
        )
        yield from _services(daemon.supervisor)
        yield from _sinks(daemon.sinks, writer.last_seq)
        yield CounterMetricFamily(
            "pbx_bridge_subscriber_overflows",
            "Times a slow subscriber was switched to catch-up from the outbox",
            hub.total_overflows,
        )


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
            ("published", "Events JetStream acknowledged"),
        )
    }
    breaker = GaugeMetricFamily(
        "pbx_bridge_sink_breaker_open",
        "1 while a sink's circuit breaker is not closed",
        labels=["sink"],
    )
    for sink in sinks:
        shown = sink.snapshot(head)
        lag.add_metric([sink.name], shown["lag"])
        for key, family in counters.items():
            if key in shown:
                family.add_metric([sink.name], shown[key])
        if "breaker" in shown:
            breaker.add_metric([sink.name], int(shown["breaker"] != "closed"))
    yield lag
    yield from counters.values()
    yield breaker


def handler(daemon: Observed) -> Callable[[web.Request], Awaitable[web.Response]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(daemon))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
