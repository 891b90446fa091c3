"""The daemon: writer, hub, reader, HTTP server, owned and stopped in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Protocol

import msgspec
import structlog
from aiohttp import web

from bridge import __version__, activity, banner, metrics, server, systemd
from bridge.api import admin, calls, commands, openapi, page, routes, sources
from bridge.api.access import Access
from bridge.api.hub import Hub
from bridge.commands.repair import Repairer
from bridge.commands.service import Commander
from bridge.config import Config, SinkConfig, SourceConfig, WebhookSinkConfig
from bridge.errors import ConfigError
from bridge.lifecycle import Service, Supervisor
from bridge.sinks.sink import Sink
from bridge.sinks.webhook import WebhookSink
from bridge.sources.http import Ingest
from bridge.sources.quarantine import Quarantine, resolver
from bridge.sources.stomp import StompSource
from bridge.store import deliveries
from bridge.store.lock import DataDirLock
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.registry import STREAMS

log = structlog.get_logger("bridge")

# How long a sink that is removed, changed or shut down lets its requests in flight finish.
SINK_DRAIN_S: Final = 5.0


Load = Callable[[], Config]


class Daemon:
    """Everything that runs, as one async context manager.

    ``load`` reads the configuration again (the file and the command line's overrides): a
    reload (SIGHUP, ``POST /v1/reload``) calls it. None: there is nothing to reload from.
    """

    def __init__(self, config: Config, *, load: Load | None = None) -> None:
        self.config = config
        self._load = load
        self.hub = Hub(client_queue=config.api.client_queue)
        self.supervisor = Supervisor()
        self.access = Access(config.api)
        self._stack = AsyncExitStack()
        self._reloading = asyncio.Lock()
        self.writer: Writer
        self.reader: Reader
        self.ingest: Ingest
        self.quarantine: Quarantine
        self.commander: Commander
        self.repairer: Repairer
        self.realtime: list[StompSource] = []
        self.sinks: list[Sink] = []
        self.reloads = 0
        self.reload_failures = 0
        self.port = 0

    async def __aenter__(self) -> Daemon:
        stack = self._stack
        await stack.__aenter__()
        config = self.config
        try:
            stack.enter_context(DataDirLock(config.storage.data_dir))  # first in, last out
            self.writer = await stack.enter_async_context(
                Writer(
                    config.storage,
                    self.hub.publish,
                    sinks=_sink_names(config),
                    settle_s=_settle_s(config),
                )
            )
            self.supervisor.watch(self.writer.commit_service)
            self.supervisor.watch(self.writer.prune_service)
            self.reader = Reader(str(config.storage.path))
            stack.callback(self.reader.close)
            # One quarantine for every source, HTTP and realtime.
            self.quarantine = Quarantine(
                self.writer, self.reader, resolver(config.sources), sources=config.sources
            )
            # Commands: a crash's unfinished ones concluded before any new one is taken.
            self.commander = Commander(config, self.writer, self.reader)
            stack.push_async_callback(self.commander.close)
            self.repairer = Repairer(self.commander, self.writer, self.reader)
            stack.push_async_callback(self.repairer.close)
            await self.commander.recover()
            stack.push_async_callback(self._close_realtime)
            for source in config.sources:
                if source.realtime is not None:
                    await self._start_realtime(source)
            stack.push_async_callback(self._close_sinks)
            for sink_config in config.sinks:
                await self._start_sink(sink_config)
            self.web = self._app()
            self.server = await server.start(self.web, config.server)
            stack.push_async_callback(self.server.close)
            self.port = self.server.port
            # Once a minute, what each source did: for whoever reads the log.
            reporting = Service("activity", lambda: activity.report(self))
            self.supervisor.watch(reporting).start()
            stack.push_async_callback(reporting.stop)
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

    # -- the parts a reload adds and removes ---------------------------------------------

    async def _start_realtime(self, source: SourceConfig) -> None:
        realtime = StompSource(
            source,
            self.writer,
            STREAMS[source.vendor],
            vendor=source.vendor,
            quarantine=self.quarantine,
            reader=self.reader,
            on_gap=self.repairer.after_gap,
        )
        await realtime.__aenter__()
        self.realtime.append(realtime)
        self.supervisor.watch(realtime.service)

    async def _stop_realtime(self, realtime: StompSource) -> None:
        self.realtime.remove(realtime)
        self.supervisor.unwatch(realtime.service)
        await realtime.__aexit__(None, None, None)

    async def _close_realtime(self) -> None:
        await asyncio.gather(*(self._stop_realtime(r) for r in list(self.realtime)))

    async def _start_sink(self, config: SinkConfig) -> None:
        if config.start == "now":
            after = await deliveries.begin_at_head(self.writer, config.name)
            if after is not None:
                log.info("sink_starts_now", sink=config.name, after=after)
        sink: Sink
        if isinstance(config, WebhookSinkConfig):
            sink = WebhookSink(config, writer=self.writer, reader=self.reader, hub=self.hub)
        else:
            from bridge.sinks.nats import NatsSink  # needs the optional nats-py

            sink = NatsSink(config, writer=self.writer, reader=self.reader, hub=self.hub)
        sink.service.start()
        self.sinks.append(sink)
        self.supervisor.watch(sink.service)

    async def _stop_sink(self, sink: Sink) -> None:
        self.sinks.remove(sink)
        self.supervisor.unwatch(sink.service)
        config = sink.config
        drain = min(config.timeout_s, SINK_DRAIN_S) if isinstance(config, WebhookSinkConfig) else 0

        await sink.close(drain_s=drain)

    async def _close_sinks(self) -> None:
        await asyncio.gather(*(self._stop_sink(sink) for sink in list(self.sinks)))

    # -- reload -----------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Read the configuration again and apply it: what ``SIGHUP`` and ``POST /v1/reload`` do.

        An invalid configuration raises :class:`ConfigError` and changes nothing.
        """
        if self._load is None:
            raise ConfigError("", "running on the embedded default config: no file to reload")
        try:
            new = self._load()
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("reload_refused", problems=problems_of(exc))
            systemd.notify(f"STATUS=reload refused, still running the previous config: {exc}")
            raise
        return await self.apply(new)

    async def apply(self, new: Config) -> dict[str, Any]:
        """Move to ``new``: sources and sinks added, removed or changed; API tokens and the log
        level swapped. The listener and the outbox cannot change under a running daemon: a change
        there is reported in ``restart_required`` and not applied."""
        async with self._reloading:
            systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            old = self.config
            restart = [k for k in ("server", "storage") if getattr(old, k) != getattr(new, k)]
            if old.logging.format != new.logging.format:
                restart.append("logging.format")
            new = msgspec.structs.replace(new, server=old.server, storage=old.storage)
            sources = _changes(old.sources, new.sources)
            sinks = _changes(old.sinks, new.sinks)
            gone_sinks = {*sinks["removed"], *sinks["changed"]}
            gone_sources = {*sources["removed"], *sources["changed"]}
            await asyncio.gather(
                *(self._stop_sink(s) for s in list(self.sinks) if s.name in gone_sinks),
                *(self._stop_realtime(r) for r in list(self.realtime) if r.name in gone_sources),
            )
            # The new table of sources everywhere that reads one; then start what is new.
            self.writer.reconfigure(sinks=_sink_names(new), settle_s=_settle_s(new))
            self.quarantine.reconfigure(resolver(new.sources), sources=new.sources)
            self.ingest.reconfigure(new)
            calls.configure(self.web, new)
            self.access.configure(new.api)
            self.commander.configure(new)
            logging.getLogger().setLevel(new.logging.level.upper())
            for source in new.sources:
                wanted = source.name in sources["added"] or source.name in sources["changed"]
                if wanted and source.realtime is not None:
                    await self._start_realtime(source)
            for sink_config in new.sinks:
                if sink_config.name in sinks["added"] or sink_config.name in sinks["changed"]:
                    await self._start_sink(sink_config)
            self.config = new
            self.reloads += 1
            changes = {
                "sources": sources,
                "sinks": sinks,
                "api": old.api != new.api,
                "logging": old.logging.level != new.logging.level,
                "restart_required": restart,
            }
            log.info("reloaded", **changes)
            if restart:
                log.warning("reload_needs_restart", keys=restart)
            systemd.notify(f"READY=1\nSTATUS={self.status()}")
            return changes

    def status(self) -> str:
        """One line for systemd's STATUS=: what runs, and what is not ready."""
        problems = self.supervisor.problems()
        state = "ready" if not problems else "not ready: " + ", ".join(sorted(problems))
        return (
            f"{state}; {len(self.config.sources)} sources, {len(self.sinks)} sinks,"
            f" last seq {self.writer.last_seq}"
        )

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body_bytes)
        app[routes.HUB] = self.hub
        app[routes.READER] = self.reader
        app[routes.ACCESS] = self.access
        app[routes.STREAMS] = set()
        self.ingest = Ingest(self.config, self.writer, self.quarantine)
        self.ingest.add_routes(app)
        routes.add_routes(app)
        calls.add_routes(app, self.config)
        admin.add_routes(app, self.quarantine, self.sinks, self.reader)
        sources.add_routes(app, self)
        page.add_routes(app)  # the status page at /
        openapi.add_routes(app)
        commands.add_routes(app, self.commander, self.repairer)
        app.router.add_post("/v1/reload", admin.guarded(self._reload, "admin"))
        app.router.add_get("/metrics", metrics.handler(self))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.on_shutdown.append(_close_streams)
        return app

    async def _reload(self, request: web.Request) -> web.Response:
        try:
            changes = await self.reload()
        except ConfigError as exc:
            return web.json_response(
                {
                    "error": "invalid_config",
                    "detail": "the new configuration was refused; the running one is unchanged",
                    "problems": problems_of(exc),
                },
                status=400,
            )
        return web.json_response({"reloaded": True, "changes": changes})

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


async def serve(config: Config, *, load: Load | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop. SIGHUP reloads (see Daemon.reload)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Daemon(config, load=load) as daemon:
        reloads: set[asyncio.Task[Any]] = set()

        def hangup() -> None:
            task = asyncio.create_task(_reload_quietly(daemon), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
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
        banner.announce(config, daemon.port)
        systemd.notify(f"READY=1\nSTATUS={daemon.status()}")
        watchdog = asyncio.create_task(_watchdog(daemon), name="watchdog")
        await stop.wait()
        log.info("stopping")
        systemd.notify("STOPPING=1")
        loop.remove_signal_handler(signal.SIGHUP)
        for task in (watchdog, *reloads):
            task.cancel()
        await asyncio.gather(watchdog, *reloads, return_exceptions=True)
    log.info("stopped")


async def _reload_quietly(daemon: Daemon) -> None:
    """SIGHUP: a refused config is logged (by reload) and the running one goes on."""
    log.info("reload_requested", signal="SIGHUP")
    with contextlib.suppress(ConfigError):
        await daemon.reload()


def problems_of(error: ConfigError) -> list[dict[str, str]]:
    """Every problem a config error carries, as ``{"path", "problem"}``."""
    found = getattr(error, "problems", None) or [(error.path, error.problem)]
    return [{"path": path, "problem": problem} for path, problem in found]


def _sink_names(config: Config) -> tuple[str, ...]:
    return tuple(sink.name for sink in config.sinks)


def _settle_s(config: Config) -> dict[str, float]:
    return {f"/{s.vendor}/{s.name}": s.missed_settle_s for s in config.sources}


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _changes(old: Sequence[_Named], new: Sequence[_Named]) -> dict[str, list[str]]:
    """Names added, removed, and kept with a different configuration."""
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    return {
        "added": [name for name in after if name not in before],
        "removed": [name for name in before if name not in after],
        "changed": [name for name in after if name in before and before[name] != after[name]],
    }


async def _watchdog(daemon: Daemon) -> None:
    """Ping systemd's watchdog while every vital service runs: a dead writer gets us restarted.

    A sink or source in trouble makes ``/readyz`` say so; restarting the process would not help.
    """
    interval = systemd.watchdog_interval_s()
    if interval is None:
        return
    status = daemon.status()
    while True:
        down = daemon.supervisor.vital_down()
        if not down:
            systemd.notify("WATCHDOG=1")
        else:
            log.error("watchdog_withheld", services=down)
        if daemon.status() != status:
            status = daemon.status()
            systemd.notify(f"STATUS={status}")
        await asyncio.sleep(interval)
