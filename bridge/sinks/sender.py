"""The HTTP side of a webhook sink: POST one body, say what came back.

A lean HTTP/1.1 client for one job: keep-alive POSTs to one receiver, where only the status and
``Retry-After`` of the answer matter. Requests are written in one piece; responses are parsed by
llhttp (``httptools``, the parser uvicorn uses); at most ``MAX_RESPONSE_BYTES`` of a body are
taken in, and a longer one closes its connection rather than being read into memory. Half the
CPU per request of a general-purpose client, which is most of what a sink costs.

Transport failures come out as :class:`TransportError` (or ``TimeoutError``), so the retry
policy needs to know nothing of the transport. A request that fails on a reused connection
before any answer arrived (the receiver closed it while idle) is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, cast
from urllib.parse import urlsplit

import httptools

from bridge import __version__
from bridge.errors import TransportError

MAX_RESPONSE_BYTES: Final = 4096
USER_AGENT: Final = f"pbx-bridge/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None = None


class Sender(Protocol):
    """The seam to the receiver (tests may pass their own)."""

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response: ...

    async def close(self) -> None: ...


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Response] | None = None
        self._status = 0
        self._retry_after: str | None = None
        self._body = 0
        self.reusable = True
        self.answered = False  # some of the answer to the current request arrived
        self._interim = False  # parsing a 1xx, which is not the answer

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._status:  # an answer without a length ends with the connection
            self._settle()
        self._fail(TransportError("connection closed before a response"))

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self._answer is None or self._answer.done():
            # Bytes with no request waiting for them: nothing later on it can be trusted.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"malformed response: {exc}"))
            self.close()

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status <= 199:
            if status == 101:  # a switch of protocols we never asked for
                self._fail(TransportError("unexpected 101 Switching Protocols"))
                self.close()
            self._interim = True  # 100 Continue, 103 Early Hints: the answer is still to come
            return
        self._status = status
        self.reusable = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > MAX_RESPONSE_BYTES:
            self._settle()  # the status is all we need: drop the connection, not the memory
            self.close()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._retry_after = None
            return
        self._settle()

    # -- the request --

    async def request(self, data: bytes) -> Response:
        assert self.transport is not None
        self._status, self._retry_after, self._body, self.answered = 0, None, 0, False
        self._interim = False
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._answer

    def _settle(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Response(self._status, self._retry_after))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class HttpSender:
    """POSTs over a pool of keep-alive connections (at most ``limit`` kept idle)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], bool, str]] = {}

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        key, secure, head = self._target(url)
        lines = [
            head,
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(timeout_s):
            reused = self._take(key)
            if reused is not None:
                try:
                    answer = await reused.request(data)
                except TransportError:
                    reused.close()
                    if reused.answered:
                        raise
                    # The receiver closed it while idle: say it again on a new connection.
                except BaseException:
                    reused.close()  # a timeout mid-answer: the connection's state is unknown
                    raise
                else:
                    return self._keep(key, reused, answer)
            fresh = await self._connect(key, secure)
            try:
                return self._keep(key, fresh, await fresh.request(data))
            except BaseException:
                fresh.close()
                raise

    def _target(self, url: str) -> tuple[tuple[str, str, int], bool, str]:
        """Where a URL goes and the start of its request head (parsed once per URL)."""
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {url!r}")
        secure = parts.scheme == "https"
        key = (parts.scheme, parts.hostname, parts.port or (443 if secure else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
            f"User-Agent: {USER_AGENT}"
        )
        found = self._targets[url] = (key, secure, head)
        return found

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if connection.reusable and transport is not None and not transport.is_closing():
                return connection
        return None

    def _keep(
        self, key: tuple[str, str, int], connection: _Connection, answer: Response
    ) -> Response:
        idle = self._idle.setdefault(key, deque())
        if connection.reusable and len(idle) < self._limit:
            idle.append(connection)
        else:
            connection.close()
        return answer

    async def _connect(self, key: tuple[str, str, int], secure: bool) -> _Connection:
        _, host, port = key
        loop = asyncio.get_running_loop()
        if secure and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            _, connection = await loop.create_connection(
                _Connection, host, port, ssl=self._tls if secure else None
            )
        except OSError as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
