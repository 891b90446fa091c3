"""The one driver every adapter's requests go through: it only moves bytes.

It maps what can go wrong on the wire into the error tree at this one seam: no connection
(refused, no such host, connect timeout) is :class:`CommandNotSent`, safe to retry; anything
after the request may have left (a read timeout, a reset, a cut answer) is
:class:`CommandUnknown`, never re-sent. It keeps the logins of adapters that need one (OnCall's
access token), renews one ``token_refresh_margin_s`` before it expires, and after a
:class:`SessionExpired` logs in again once and resends: a PBX that refused the token did not
carry the command out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import aiohttp
import structlog

from bridge.commands.adapter import Adapter
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Session, Target
from bridge.config import SourceConfig
from bridge.errors import (
    CommandError,
    CommandNotSent,
    CommandRefused,
    CommandUnknown,
    SessionExpired,
)

log = structlog.get_logger("bridge.commands")

MAX_ANSWER_BYTES: Final = 4 << 20  # a page of call history fits; a runaway answer does not


class Driver:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._sessions: dict[tuple[str, str], Session] = {}
        self._logins: dict[tuple[str, str], asyncio.Lock] = {}
        self.logins = 0  # logins sent, for tests and /metrics

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def forget(self, source: str) -> None:
        """Drop a source's logins (its config changed on reload)."""
        for key in [key for key in self._sessions if key[0] == source]:
            del self._sessions[key]

    async def run(
        self,
        adapter: Adapter,
        command: Command,
        source: SourceConfig,
        *,
        timeout_s: float,
        connect_timeout_s: float,
    ) -> Result:
        """Send ``command`` through ``adapter`` and read its answer."""
        session = await self._session(adapter, source, timeout_s, connect_timeout_s)
        for attempt in range(2):
            target = Target(source=source, now=self._clock(), session=session)
            try:
                request = adapter.build(command, target)
            except CommandError:
                raise
            except Exception as exc:  # an adapter bug: nothing has been sent
                log.exception("command_build_failed", vendor=adapter.vendor)
                raise CommandNotSent(
                    f"the {adapter.vendor} adapter could not build the request"
                    f" ({type(exc).__name__})"
                ) from None
            answer = await self.send(
                request, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s
            )
            try:
                return adapter.parse(command, answer)
            except SessionExpired:
                if adapter.login is None or attempt:
                    raise
                self._sessions.pop((source.name, adapter.vendor), None)
                session = await self._session(adapter, source, timeout_s, connect_timeout_s)
            except CommandError:
                raise
            except Exception as exc:  # an answer the adapter cannot read, after sending
                log.exception("command_answer_unreadable", vendor=adapter.vendor)
                raise CommandUnknown(
                    f"the PBX's answer (HTTP {answer.status}) could not be read"
                    f" ({type(exc).__name__}): the command may have been carried out, and is"
                    " not sent again"
                ) from None
        raise AssertionError("unreachable")

    async def _session(
        self, adapter: Adapter, source: SourceConfig, timeout_s: float, connect_timeout_s: float
    ) -> Session | None:
        if adapter.login is None or adapter.logged_in is None:
            return None
        key = (source.name, adapter.vendor)
        margin_s = source.api.token_refresh_margin_s if source.api is not None else 0.0
        lock = self._logins.setdefault(key, asyncio.Lock())
        async with lock:  # one login at a time per source: a burst of commands shares it
            held = self._sessions.get(key)
            if held is not None and held.expires_at - margin_s > self._clock():
                return held
            request = adapter.login(Target(source=source, now=self._clock()))
            self.logins += 1
            try:
                answer = await self.send(
                    request, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s
                )
            except CommandUnknown as exc:  # only the login was sent, never the command
                raise CommandNotSent(f"logging in to the PBX failed: {exc.message}") from None
            try:
                session = adapter.logged_in(answer, self._clock())
            except SessionExpired as exc:  # a login refused is a refusal, not an expiry
                raise CommandRefused(
                    exc.message, vendor_code=exc.vendor_code, status=exc.status
                ) from None
            self._sessions[key] = session
            return session

    async def send(
        self, request: HttpRequest, *, timeout_s: float, connect_timeout_s: float
    ) -> HttpAnswer:
        """One request, its answer read up to :data:`MAX_ANSWER_BYTES`."""
        if self._http is None:
            # No cookies, no environment proxies: only what the adapter built goes out.
            self._http = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=True
            )
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=connect_timeout_s, connect=connect_timeout_s
        )
        try:
            async with self._http.request(
                request.method,
                request.url,
                headers=list(request.headers),
                data=request.body or None,
                timeout=timeout,
                allow_redirects=False,
                skip_auto_headers=("User-Agent",) if request.header("user-agent") else (),
            ) as response:
                # The whole body, however many reads it takes, up to the cap.
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:  # sent, and its answer unreadable: unknown
                        raise CommandUnknown(
                            f"the PBX's answer is larger than {MAX_ANSWER_BYTES} bytes: the"
                            " command may have been carried out, and is not sent again"
                        )
                    chunks.append(chunk)
                body = b"".join(chunks)
                headers = {key.lower(): value for key, value in response.headers.items()}
                return HttpAnswer(status=response.status, headers=headers, body=body)
        except aiohttp.ConnectionTimeoutError:
            raise CommandNotSent(f"no connection to the PBX within {connect_timeout_s} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise CommandNotSent(f"the PBX could not be reached: {exc.os_error}") from None
        except aiohttp.InvalidURL:  # its text would show the URL, and some carry keys
            raise CommandNotSent("the PBX's URL is not valid") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise CommandUnknown(
                f"no answer from the PBX within {timeout_s} s: the command may have been carried"
                " out, and is not sent again"
            ) from None
        except aiohttp.ClientError as exc:
            raise CommandUnknown(
                # The class only: some vendors' keys are in the URL, which texts may show.
                f"the connection to the PBX failed after the request was sent"
                f" ({type(exc).__name__}): the"
                " command may have been carried out, and is not sent again"
            ) from None
