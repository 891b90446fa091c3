"""A lean HTTP/1.1 keep-alive client: one request in flight per connection, no pipelining.

aiohttp's ClientSession costs more CPU per request than the servers under test, so on a 2-core
machine it would measure itself. This protocol does the least a correct client must: write the
request, find the end of the headers, read ``Content-Length`` bytes of body, hand back the
status. It understands only what the bench servers send (Content-Length bodies, no chunking).
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

_CONTENT_LENGTH: Final = b"\r\ncontent-length:"


class ProtocolError(Exception):
    """The server sent something this client does not read (or closed the connection)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` may be awaited by one caller at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only look like one.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ProtocolError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None:
            return
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(_CONTENT_LENGTH)
        if at < 0:
            self._fail(ProtocolError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + len(_CONTENT_LENGTH) : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(buffer) < total:
            return  # the rest of the body is still on its way
        status = int(head[9:12])
        del buffer[:total]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    def request(self, data: bytes) -> asyncio.Future[int]:
        """Send one complete request; the future gets the response's status code."""
        if self._lost is not None:
            raise ProtocolError("connection is closed") from self._lost
        assert self._transport is not None
        assert self._waiter is None, "one request at a time"
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(host: str, port: int) -> Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return protocol


def post(path: str, host: str, port: int, body: bytes) -> bytes:
    """The bytes of a ``POST`` with a JSON body."""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), port, len(body), body)
    )
