"""The HTTP listener: aiohttp's server, with limits on slow clients and on connections.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but bounds neither how long a
request head or body may take to arrive nor how many connections are open: a client that opens
connections and sends nothing, or a byte now and then, holds a file descriptor each for as long
as it likes. :class:`_Connection` adds the missing rules as per-connection timers and a count.
It reads a few private attributes of aiohttp's ``RequestHandler`` (as of 3.14), named where
used; tests/test_server_limits.py fails if an upgrade changes them.
"""

from __future__ import annotations

import asyncio
import resource
from typing import cast

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from bridge.config import ServerConfig

log = structlog.get_logger("bridge.server")

# Sent, then closed, to a connection over max_connections (before it has sent anything we read).
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
)
_REFUSAL_LOG_INTERVAL_S = 60.0
# Descriptors the daemon needs besides client connections: SQLite, sinks, realtime sources, logs.
_RESERVED_FDS = 128


class Server:
    """The running listener; ``connections`` (open now) and ``refused`` (so far) are metrics."""

    def __init__(self, config: ServerConfig, runner: web.AppRunner) -> None:
        self.config = config
        self.connections = 0
        self.refused = 0
        self._runner = runner
        self._listener: asyncio.Server | None = None
        self._next_refusal_log = 0.0

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, then let aiohttp answer in-flight requests and close the rest."""
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()

    def _refusing(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refused += 1
        now = loop.time()
        if now >= self._next_refusal_log:  # a flood must not become a flood of log lines
            self._next_refusal_log = now + _REFUSAL_LOG_INTERVAL_S
            log.warning(
                "connections_refused",
                max_connections=self.config.max_connections,
                refused=self.refused,
            )


async def start(app: web.Application, config: ServerConfig) -> Server:
    """Serve ``app`` on ``config.listen`` with ``config``'s timeouts and connection cap."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    server = Server(config, runner)
    manager = runner.server
    assert manager is not None
    loop = asyncio.get_running_loop()
    try:
        server._listener = await loop.create_server(
            lambda: _Connection(server, manager, loop),
            config.host,
            config.port,
            # A burst must reach accept() (to be counted, and refused) instead of having its
            # SYNs dropped by a full kernel queue.
            backlog=1024,
        )
    except BaseException:
        await runner.cleanup()
        raise
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and config.max_connections + _RESERVED_FDS > soft:
        log.warning(
            "max_connections_above_fd_limit",
            max_connections=config.max_connections,
            nofile=soft,
            hint="raise the limit (systemd: LimitNOFILE) or lower server.max_connections",
        )
    return server


class _Connection(RequestHandler):
    """aiohttp's HTTP/1.1 connection, with a head timeout, a body timeout and the cap."""

    __slots__ = ("_body", "_body_timer", "_head_timer", "_refused", "_server")

    def __init__(
        self, server: Server, manager: web.Server, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=server.config.keepalive_timeout_s,
            access_log=None,  # type: ignore[arg-type]  # aiohttp's documented "no access log"
        )
        self._server = server
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the latest request's body, while it arrives
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server.connections >= server.config.max_connections:
            # Refused before aiohttp sees it: no task, no parser use, the descriptor freed now.
            self._refused = True
            server._refusing(self._loop)
            cast(asyncio.Transport, transport).write(_REFUSAL)
            transport.close()
            return
        server.connections += 1
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(
            server.config.header_timeout_s, self._head_timed_out
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._server.connections -= 1
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # Bytes that are no body and no WebSocket (aiohttp: upgraded): a later request on a
        # kept-alive connection has begun, and its head is due. (The idle gap before it is
        # keepalive_timeout's, which aiohttp enforces.)
        if self._head_timer is None and data and not self._upgraded and self._body is None:
            self._head_timer = self._loop.call_later(
                self._server.config.header_timeout_s, self._head_timed_out
            )
        heads = self._request_count  # aiohttp: requests parsed on this connection
        super().data_received(data)
        if self._request_count != heads:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            _, payload = self._messages[-1]  # aiohttp: parsed requests not yet handled
            if not payload.is_eof():  # only the last one's body can still be arriving
                self._body = payload
                self._body_timer = self._loop.call_later(
                    self._server.config.body_timeout_s, self._body_timed_out, payload
                )
                payload.on_eof(self._body_arrived)

    def _body_arrived(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        log.debug("connection_timed_out", phase="head", peer=self.peername)
        self.force_close()

    def _body_timed_out(self, payload: StreamReader) -> None:
        self._body_timer = None
        log.debug("connection_timed_out", phase="body", peer=self.peername)
        if self._request_in_progress:  # aiohttp: a handler is running
            # The handler's read raises this and aiohttp answers it: 408, never a 2xx. Then no
            # lingering for the rest of a body that is not coming: the connection closes.
            payload.set_exception(web.HTTPRequestTimeout(text="request body timed out"))
            self._lingering_time = 0.0
        else:  # answered already, and aiohttp is reading the rest to discard it
            self.force_close()
