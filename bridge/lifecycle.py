"""Supervised services: the one shape for every long-running task of the daemon.

A :class:`Service` runs one coroutine function (``run``) in a named task. ``run`` is expected to
go on until the service is stopped; if it returns or raises instead, that is logged as
``task_died`` (with the traceback), counted, and ``run`` is started again after an exponential
backoff with jitter. What each service reports (``state``, ``restarts``, ``last_error``, and its
own ``health`` check) is what ``/readyz`` and the systemd watchdog read: nothing can stop working
while the daemon says it is ready.

A :class:`Supervisor` holds the daemon's services and answers for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

log = structlog.get_logger("bridge.lifecycle")

State = Literal["new", "running", "backoff", "stopping", "stopped"]
Health = Callable[[], str | None]  # why the service is not ready now, or None

BACKOFF_MIN_S: Final = 0.1
BACKOFF_MAX_S: Final = 30.0
STOP_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [min, min * 2**attempt], capped at max."""

    min_s: float = BACKOFF_MIN_S
    max_s: float = BACKOFF_MAX_S

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(attempt, 30))
        return rng.uniform(self.min_s, max(ceiling, self.min_s))


def _problem(exc: BaseException | None) -> str:
    if exc is None:
        return "returned"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class Service:
    """One supervised task: started, watched, restarted with backoff, stopped."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        health: Health | None = None,
        vital: bool = False,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.vital = vital  # the watchdog is withheld while a vital service is down
        self._run = run
        self._health = health
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._hurry = asyncio.Event()  # cuts a backoff short: the owner wants it to end now
        self._lock = asyncio.Lock()  # one stop/start at a time (overlapping admin calls)
        self.state: State = "new"
        self.restarts = 0
        self.last_error: str | None = None

    @property
    def alive(self) -> bool:
        return self.state == "running"

    def problem(self) -> str | None:
        """Why this service is not ready now, or ``None``."""
        if self.state != "running":
            detail = f": {self.last_error}" if self.last_error else ""
            return f"{self.state}{detail}"
        return self._health() if self._health is not None else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "problem": self.problem(),
        }

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            raise RuntimeError(f"service {self.name} is still {self.state}")
        self._stopping = False
        self._hurry.clear()
        self.state = "running"
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Cancel ``run`` and wait for it to unwind (at most ``timeout_s``)."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        task.cancel()
        await self._join(task, timeout_s)

    def ending(self) -> None:
        """``run`` is about to return by itself, as its owner asked: that is not a death.

        A run waiting out a backoff starts at once, so that it can do its ending.
        """
        self._stopping = True
        self._hurry.set()

    async def finish(self, timeout_s: float | None = None) -> None:
        """Wait for ``run`` to return by itself (its owner has told it to end)."""
        self._stopping = True
        task = self._task
        if task is not None:
            await self._join(task, timeout_s)

    async def restart(self, meanwhile: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop, do ``meanwhile`` (say, rewrite what ``run`` starts from), start afresh.

        One restart at a time; ``run`` is started again even if ``meanwhile`` fails.
        """
        async with self._lock:
            await self.stop()
            try:
                if meanwhile is not None:
                    await meanwhile()
            finally:
                self.start()

    async def _join(self, task: asyncio.Task[None], timeout_s: float | None) -> None:
        done, _ = await asyncio.wait((task,), timeout=timeout_s)
        if not done:
            # It ignores its cancellation (a bug): leave it behind rather than hang the stop,
            # and say so (a start is refused until it has gone).
            log.error("task_stop_timed_out", service=self.name, timeout_s=timeout_s)
            task.cancel()
            self.state = "stopping"
            return
        if not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()  # retrieved: no "exception was never retrieved" at exit
        self.state = "stopped"

    async def _supervise(self) -> None:
        attempt = 0
        with structlog.contextvars.bound_contextvars(service=self.name):
            while True:
                started = time.monotonic()
                error: BaseException | None = None
                try:
                    await self._run()
                except asyncio.CancelledError:
                    if self._stopping:
                        raise
                    # Cancelled from inside (a bug): the same as dying.
                    error = RuntimeError("cancelled unexpectedly")
                except Exception as exc:
                    error = exc
                if self._stopping:
                    return
                self.restarts += 1
                self.last_error = _problem(error)
                self.state = "backoff"
                if time.monotonic() - started > self._backoff.max_s:
                    attempt = 0  # it ran for a good while: start the backoff afresh
                delay = self._backoff.delay_s(attempt, self._rng)
                attempt += 1
                log.error(
                    "task_died",
                    error=self.last_error,
                    restarts=self.restarts,
                    restart_in_s=round(delay, 3),
                    exc_info=error,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._hurry.wait()
                self.state = "running"
                log.info("task_restarted", restarts=self.restarts)


class Supervisor:
    """The daemon's services, for readiness and the watchdog, in start order."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def watch(self, service: Service) -> Service:
        """Count ``service`` in readiness (its owner starts and stops it)."""
        self.services.append(service)
        return service

    def unwatch(self, service: Service) -> None:
        """No longer count ``service`` (its owner has stopped it for good: a reload removed it)."""
        if service in self.services:
            self.services.remove(service)

    def problems(self) -> dict[str, str]:
        """Each service that is not ready, with the reason: what ``/readyz`` answers 503 with."""
        found = {}
        for service in self.services:
            problem = service.problem()
            if problem is not None:
                found[service.name] = problem
        return found

    def vital_down(self) -> list[str]:
        """Vital services that are not running: the watchdog is withheld while there are any."""
        return [s.name for s in self.services if s.vital and not s.alive]
