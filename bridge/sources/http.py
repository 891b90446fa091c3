"""HTTP ingest: ``POST|GET /ingest/{source}[/{anything}]``.

The order of checks is the order of trust: which source, from where (IP allow-list), who
(auth), how big (413), what (normalise: 400 names the problem), then durable (commit, else 503).
A 2xx is written only after the writer says the events are committed, and a 400 only after the
refused payload is in quarantine: one that cannot be kept (the outbox fails, the source's
quarantine is full) is a 503, so the vendor keeps it and retries.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog
from aiohttp import web

from bridge.config import AuthToken, Config, SourceConfig
from bridge.errors import AuthError, OutboxError, PayloadError, QuarantineFullError
from bridge.histogram import LATENCY_S, Histogram
from bridge.sources import auth
from bridge.sources.normalise import normalise
from bridge.sources.quarantine import Quarantine
from bridge.sources.request import raw_bytes
from bridge.store.writer import Writer
from bridge.throttle import Throttle
from bridge.vendors.base import Payload, SourceContext, Vendor, at, context_template
from bridge.vendors.registry import VENDORS

log = structlog.get_logger("bridge.ingest")
_debug = logging.getLogger("bridge.ingest")  # its level: the per-push line costs nothing off

# Pushes to a source that is not configured are counted under this (a configured name
# cannot start with "_"), never under the name the client chose.
UNKNOWN: Final = "_unknown"
# A refused push is logged at most once per this long per kind and source (a flood of bad
# pushes must not flood the log); the next line says how many were held back.
REFUSED_LOG_INTERVAL_S: Final = 10.0
_EVENTS: Final = web.RequestKey("events", int)  # its event count, for the per-push line


@dataclass(frozen=True, slots=True)
class Source:
    config: SourceConfig
    vendor: Vendor
    authenticator: auth.Authenticator
    context: SourceContext  # the template: each payload's is at(context, received_at)
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    secret_param: str | None  # a query parameter carrying a credential, dropped from payloads


def _error(status: int, code: str, detail: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


class Ingest:
    """The ingest endpoint for every configured source."""

    def __init__(
        self,
        config: Config,
        writer: Writer,
        quarantine: Quarantine,
        clock: auth.Clock = auth.utc_now,
    ) -> None:
        self._writer = writer
        self.quarantine = quarantine
        self._max_body = config.server.max_body_bytes
        self._clock = clock
        self._sources: dict[str, Source] = {}
        self.reconfigure(config)
        # (source, status) -> count; read by /metrics. A plain Counter: nothing on the hot path.
        self.responses: Counter[tuple[str, int]] = Counter()
        # source -> when (Unix time) its last request was answered, whatever the answer.
        self.last_push: dict[str, float] = {}
        # source (or UNKNOWN) -> seconds from the request's start to its answer written.
        self.latency: dict[str, Histogram] = {}
        self.refused_log = Throttle(REFUSED_LOG_INTERVAL_S)  # refused pushes' warnings

    def reconfigure(self, config: Config) -> None:
        """The sources of a (re)loaded config, swapped whole: a request in flight keeps the
        source it started with. An unchanged source keeps its authenticator (Digest nonces)."""
        old = self._sources
        sources = {}
        for source in config.sources:
            kept = old.get(source.name)
            if kept is not None and kept.config == source:
                sources[source.name] = kept
                continue
            sources[source.name] = Source(
                config=source,
                vendor=VENDORS[source.vendor],
                authenticator=auth.build(source.auth, source.tz, self._clock),
                context=context_template(source, source.vendor),
                networks=source.networks,
                secret_param=source.auth.query if isinstance(source.auth, AuthToken) else None,
            )
        self._sources = sources

    def _context(self, source: Source, received_at: datetime) -> SourceContext:
        return at(source.context, received_at)

    def add_routes(self, app: web.Application) -> None:
        # (?s:): a tail may hold a newline (%0A), which a bare "." would leave to aiohttp's 404.
        for path in ("/ingest/{source}", "/ingest/{source}/{tail:(?s:.*)}"):
            app.router.add_route("POST", path, self.handle)
            app.router.add_route("GET", path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        name = request.match_info["source"]
        source = self._sources.get(name)
        response: web.StreamResponse
        if source is None:
            response = self._unknown(request, name)
            name = UNKNOWN
        else:
            response = await self._handle(request, source)
            self.last_push[name] = time.time()
        try:
            # Written here rather than by aiohttp after we return: the latency includes it.
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            pass  # the client is gone (aiohttp would have ignored it too): still an answer
        finally:
            self._answered(request, name, response.status, time.perf_counter() - started)
        return response

    def _answered(self, request: web.Request, name: str, status: int, elapsed_s: float) -> None:
        self.responses[(name, status)] += 1
        latency = self.latency.get(name)
        if latency is None:
            latency = self.latency[name] = Histogram(LATENCY_S)
        latency.observe(elapsed_s)
        if _debug.isEnabledFor(logging.DEBUG):
            events = request.get(_EVENTS, 0)
            ms = round(elapsed_s * 1000, 3)
            log.debug("ingest_answered", source=name, status=status, events=events, ms=ms)

    def _unknown(self, request: web.Request, name: str) -> web.Response:
        self.refused_log.log(
            ("unknown_source",),  # one key for every name: the names are the client's
            log.warning,
            "ingest_refused",
            reason="unknown_source",
            name=name[:100],
            peer=request.remote,
        )
        return _error(404, "unknown_source", f"no source named {name!r} is configured")

    async def _handle(self, request: web.Request, source: Source) -> web.StreamResponse:
        name = source.config.name
        if source.networks and not _allowed(request.remote, source):
            self.refused_log.log(
                ("ip_not_allowed", name),
                log.warning,
                "ingest_refused",
                source=name,
                reason="ip_not_allowed",
                peer=request.remote,
            )
            return _error(403, "forbidden", f"address {request.remote} is not allowed")
        try:
            source.authenticator.check(request)
        except AuthError as exc:
            # Keyed by source, not reason: some reasons quote what the client sent.
            self.refused_log.log(
                ("auth", name),
                log.warning,
                "ingest_refused",
                source=name,
                reason=exc.reason,
                peer=request.remote,
            )
            response = _error(401, "unauthorized", exc.reason)
            for challenge in exc.challenges:
                response.headers.add("WWW-Authenticate", challenge)
            return response
        if request.content_length is not None and request.content_length > self._max_body:
            return _too_large(self._max_body)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self._max_body)
        query: Mapping[str, str] = request.query
        if source.secret_param and source.secret_param in query:
            # The shared token authenticated the request; it must not reach raw (and every
            # subscriber and webhook) with the vendor's fields.
            query = {k: v for k, v in query.items() if k != source.secret_param}
        payload = Payload(
            body=body,
            query=query,
            content_type=_text(request.headers.get("Content-Type", "")),
            path=request.match_info.get("tail", ""),
        )
        context = self._context(source, self._clock())
        try:
            events = normalise(source.vendor.normalize, payload, context)
        except PayloadError as exc:
            try:
                kept = await self.quarantine.keep(
                    source=name,
                    vendor=source.vendor.name,
                    payload=payload,
                    received_at=context.received_at,
                    error=exc,
                )
            except QuarantineFullError as full:
                return _full(full, exc)  # logged by the quarantine, not once per request
            except OutboxError as failure:
                # Not even kept: make the vendor retry rather than lose it.
                return _unavailable(name, failure)
            log.warning(
                "payload_rejected",
                source=name,
                field=exc.field,
                problem=exc.problem,
                quarantine_id=kept,
            )
            if source.vendor.reject is not None:
                answer = source.vendor.reject(exc)
                return web.Response(
                    status=answer.status, body=answer.body, content_type=answer.content_type
                )
            return _error(400, "invalid_payload", exc.problem, field=exc.field, quarantine_id=kept)
        try:
            if events:
                request[_EVENTS] = len(events)
                await self._writer.submit(events)
        except OutboxError as exc:
            return _unavailable(name, exc)
        ack = source.vendor.ack
        return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)


def _allowed(remote: str | None, source: Source) -> bool:
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in network for network in source.networks)


def _text(header: str) -> str:
    """A header value storable as text: aiohttp keeps bytes that are not UTF-8 as surrogates."""
    return raw_bytes(header).decode("utf-8", "backslashreplace")


def _full(full: QuarantineFullError, refused: PayloadError) -> web.Response:
    response = _error(
        503,
        "quarantine_full",
        f"{full}; this payload was refused ({refused})",
        held_entries=full.held_entries,
        held_bytes=full.held_bytes,
        max_entries=full.max_entries,
        max_bytes=full.max_bytes,
        field=refused.field,
    )
    # Room comes back only when an operator reprocesses or raises the cap: no use retrying soon.
    response.headers["Retry-After"] = "60"
    return response


def _unavailable(source: str, exc: OutboxError) -> web.Response:
    log.error("ingest_not_committed", source=source, error=str(exc))
    response = _error(503, "outbox_unavailable", str(exc))
    response.headers["Retry-After"] = "1"
    return response


def _too_large(limit: int) -> web.Response:
    return _error(413, "payload_too_large", f"body exceeds {limit} bytes")
