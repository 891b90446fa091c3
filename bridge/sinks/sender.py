"""The HTTP side of a webhook sink: POST one body, say what came back.

A keep-alive connection pool per sink. Only the status and ``Retry-After`` matter, so at most
``MAX_RESPONSE_BYTES`` of a response body are read; a longer one closes its connection rather
than being read into memory. Transport failures come out as :class:`TransportError` (or
``TimeoutError``), so the retry policy needs to know nothing of aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp

from bridge.errors import TransportError

MAX_RESPONSE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None = None


class Sender(Protocol):
    """The one-method seam to the receiver (tests may pass their own)."""

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response: ...

    async def close(self) -> None: ...


class HttpSender:
    """POSTs with aiohttp over a pool of at most ``limit`` keep-alive connections."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                headers={"User-Agent": "pbx-bridge"},
            )
        return self._session

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._open().post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                answer = Response(response.status, response.headers.get("Retry-After"))
                await response.content.read(MAX_RESPONSE_BYTES)
                if not response.content.at_eof():
                    response.close()  # more than we read: drop the connection, not the memory
                return answer
        except TimeoutError:
            raise  # aiohttp's own timeouts are ClientErrors too: keep them timeouts
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
