"""The daemon: writer, hub, reader, HTTP server, owned and stopped in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from bridge import __version__, metrics, server, systemd
from bridge.api import admin, calls, routes
from bridge.api.hub import Hub
from bridge.config import Config, WebhookSinkConfig
from bridge.lifecycle import Supervisor
from bridge.sinks.sink import Sink
from bridge.sinks.webhook import WebhookSink
from bridge.sources.http import Ingest
from bridge.sources.quarantine import Quarantine, resolver
from bridge.sources.stomp import StompSource
from bridge.store.lock import DataDirLock
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.registry import STREAMS

log = structlog.get_logger("bridge")


class Daemon:
    """Everything that runs, as one async context manager."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub = Hub(client_queue=config.api.client_queue)
        self.supervisor = Supervisor()
        self._stack = AsyncExitStack()
        self.writer: Writer
        self.reader: Reader
        self.ingest: Ingest
        self.quarantine: Quarantine
        self.realtime: list[StompSource] = []
        self.sinks: list[Sink] = []
        self.port = 0

    async def __aenter__(self) -> Daemon:
        stack = self._stack
        await stack.__aenter__()
        try:
            stack.enter_context(DataDirLock(self.config.storage.data_dir))  # first in, last out
            self.writer = await stack.enter_async_context(
                Writer(
                    self.config.storage,
                    self.hub.publish,
                    sinks=tuple(sink.name for sink in self.config.sinks),
                    settle_s={
                        f"/{source.vendor}/{source.name}": source.missed_settle_s
                        for source in self.config.sources
                    },
                )
            )
            self.supervisor.watch(self.writer.commit_service)
            self.supervisor.watch(self.writer.prune_service)
            self.reader = Reader(str(self.config.storage.path))
            stack.callback(self.reader.close)
            # One quarantine for every source, HTTP and realtime.
            self.quarantine = Quarantine(
                self.writer,
                self.reader,
                resolver(self.config.sources),
                sources=self.config.sources,
            )
            for source in self.config.sources:
                if source.realtime is not None:
                    realtime = StompSource(
                        source,
                        self.writer,
                        STREAMS[source.vendor],
                        vendor=source.vendor,
                        quarantine=self.quarantine,
                        reader=self.reader,
                    )
                    self.realtime.append(await stack.enter_async_context(realtime))
                    self.supervisor.watch(realtime.service)
            for sink_config in self.config.sinks:
                if isinstance(sink_config, WebhookSinkConfig):
                    sink = WebhookSink(
                        sink_config, writer=self.writer, reader=self.reader, hub=self.hub
                    )
                    self.sinks.append(await stack.enter_async_context(sink))
                    self.supervisor.watch(sink.service)
                else:
                    from bridge.sinks.nats import NatsSink  # needs the optional nats-py

                    nats = NatsSink(
                        sink_config, writer=self.writer, reader=self.reader, hub=self.hub
                    )
                    self.sinks.append(await stack.enter_async_context(nats))
                    self.supervisor.watch(nats.service)
            self.server = await server.start(self._app(), self.config.server)
            stack.push_async_callback(self.server.close)
            self.port = self.server.port
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body_bytes)
        app[routes.HUB] = self.hub
        app[routes.READER] = self.reader
        app[routes.API_CONFIG] = self.config.api
        app[routes.STREAMS] = set()
        self.ingest = Ingest(self.config, self.writer, self.quarantine)
        self.ingest.add_routes(app)
        routes.add_routes(app)
        calls.add_routes(app, self.config)
        admin.add_routes(app, self.quarantine, self.sinks, self.reader)
        app.router.add_get("/metrics", metrics.handler(self))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.on_shutdown.append(_close_streams)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def _readyz(self, request: web.Request) -> web.Response:
        realtime = {source.name: source.snapshot() for source in self.realtime}
        problems = self.supervisor.problems()
        ready = not problems
        body = {
            "status": "ready" if ready else "not_ready",
            "problems": problems,
            "outbox": {
                "writable": self.writer.alive and self.writer.failing is None,
                "last_seq": self.writer.last_seq,
                "commits": self.writer.commits,
                "error": self.writer.failing,
            },
            "services": {s.name: s.snapshot() for s in self.supervisor.services},
            "subscribers": self.hub.subscribers,
            "sources": [source.name for source in self.config.sources],
            "realtime": realtime,
        }
        return web.json_response(body, status=200 if ready else 503)


async def _close_streams(app: web.Application) -> None:
    """SSE and WebSocket handlers run forever: end them so shutdown does not wait for them."""
    streams: set[asyncio.Task[Any]] = app[routes.STREAMS]
    for task in list(streams):
        task.cancel()


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Daemon(config) as daemon:
        log.info(
            "listening",
            host=config.server.host,
            port=daemon.port,
            url=f"http://{config.server.host}:{daemon.port}",
            events=f"http://{config.server.host}:{daemon.port}/v1/events",
            ready=f"http://{config.server.host}:{daemon.port}/readyz",
            data_dir=config.storage.data_dir,
            sources=[f"/ingest/{source.name}" for source in config.sources],
            version=__version__,
        )
        systemd.notify("READY=1")
        watchdog = asyncio.create_task(_watchdog(daemon), name="watchdog")
        await stop.wait()
        log.info("stopping")
        systemd.notify("STOPPING=1")
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    log.info("stopped")


async def _watchdog(daemon: Daemon) -> None:
    """Ping systemd's watchdog while every vital service runs: a dead writer gets us restarted.

    A sink or source in trouble makes ``/readyz`` say so; restarting the process would not help.
    """
    interval = systemd.watchdog_interval_s()
    if interval is None:
        return
    while True:
        down = daemon.supervisor.vital_down()
        if not down:
            systemd.notify("WATCHDOG=1")
        else:
            log.error("watchdog_withheld", services=down)
        await asyncio.sleep(interval)
