"""Supervised services: a task that dies is said, counted, restarted; readiness tells."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bridge.lifecycle import Backoff, Service, Supervisor
from tests.conftest import until

QUICK = Backoff(min_s=0.01, max_s=0.05)


class Flaky:
    """A run that fails its first ``failures`` starts, then runs until cancelled."""

    def __init__(self, failures: int, *, returns: bool = False) -> None:
        self.failures = failures
        self.returns = returns
        self.starts = 0
        self.running = asyncio.Event()
        self.gate = asyncio.Event()

    async def run(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            await self.gate.wait()
            if self.returns:
                return
            raise RuntimeError(f"boom {self.starts}")
        self.running.set()
        await asyncio.Event().wait()


async def test_a_dying_task_is_logged_counted_and_restarted() -> None:
    flaky = Flaky(failures=2)
    service = Service("thing", flaky.run, backoff=QUICK)
    with capture_logs() as logs:
        service.start()
        flaky.gate.set()
        await asyncio.wait_for(flaky.running.wait(), 5)
        await service.stop()
    assert flaky.starts == 3
    assert service.restarts == 2
    assert service.last_error == "RuntimeError: boom 2"
    died = [entry for entry in logs if entry["event"] == "task_died"]
    assert len(died) == 2
    assert died[0]["exc_info"].args == ("boom 1",)  # the traceback goes with it
    assert died[0]["log_level"] == "error"
    assert service.state == "stopped"


async def test_returning_is_dying_too() -> None:
    flaky = Flaky(failures=1, returns=True)
    service = Service("thing", flaky.run, backoff=QUICK)
    service.start()
    flaky.gate.set()
    await asyncio.wait_for(flaky.running.wait(), 5)
    assert (service.restarts, service.last_error) == (1, "returned")
    await service.stop()


async def test_not_ready_while_waiting_to_restart() -> None:
    flaky = Flaky(failures=1)
    slow = Backoff(min_s=60.0, max_s=60.0)
    service = Service("thing", flaky.run, backoff=slow)
    supervisor = Supervisor()
    supervisor.watch(service)
    service.start()
    assert supervisor.problems() == {}
    flaky.gate.set()
    await until(lambda: service.state == "backoff", what="the death")
    assert supervisor.problems() == {"thing": "backoff: RuntimeError: boom 1"}
    await service.stop()  # stops promptly even in the middle of a backoff
    assert service.state == "stopped"


async def test_health_is_part_of_readiness_and_vital_services_hold_the_watchdog() -> None:
    reason: dict[str, str | None] = {"now": None}
    flaky = Flaky(failures=1)
    writer = Service(
        "writer", flaky.run, health=lambda: reason["now"], vital=True, backoff=Backoff(60, 60)
    )
    supervisor = Supervisor()
    supervisor.watch(writer)
    writer.start()
    reason["now"] = "outbox writes failing: disk I/O error"
    assert supervisor.problems() == {"writer": "outbox writes failing: disk I/O error"}
    assert supervisor.vital_down() == []  # failing writes: not ready, but alive
    flaky.gate.set()
    await until(lambda: not writer.alive, what="the death")
    assert supervisor.vital_down() == ["writer"]
    await writer.stop()


async def test_finish_waits_for_a_run_that_ends_by_itself() -> None:
    done = asyncio.Event()

    async def run() -> None:
        await done.wait()

    service = Service("drain", run, backoff=QUICK)
    with capture_logs() as logs:
        service.start()
        service.ending()
        done.set()
        await service.finish(timeout_s=5)
    assert service.restarts == 0
    assert not [entry for entry in logs if entry["event"] == "task_died"]


async def test_stop_gives_up_on_a_run_that_will_not_end() -> None:
    release, waiting = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            waiting.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a bug: swallows its cancellation

    service = Service("stubborn", stubborn, backoff=QUICK)
    service.start()
    await asyncio.wait_for(waiting.wait(), 5)
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(5):
                await service.stop(timeout_s=0.1)
        assert [entry["event"] for entry in logs] == ["task_stop_timed_out"]
        assert service.state == "stopping"  # not "stopped": it is still there
        assert service.problem() == "stopping"
        with pytest.raises(RuntimeError, match="still stopping"):
            service.start()  # never two runs at once
    finally:
        release.set()  # so the test's loop can close


async def test_a_backoff_is_cut_short_when_the_owner_wants_the_run_to_end() -> None:
    """The writer dies, then shutdown comes: its run starts at once to drain, not after the
    backoff (which can be 30 s)."""
    runs = 0
    draining = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        draining.set()  # the second run: drains and returns

    service = Service("writer", run, backoff=Backoff(min_s=60, max_s=60))
    service.start()
    await until(lambda: service.state == "backoff", what="the death")
    service.ending()
    async with asyncio.timeout(5):
        await service.finish()
    assert draining.is_set()
    assert service.state == "stopped"


async def test_restarts_do_not_overlap() -> None:
    """Two restarts at once (two operator calls): one after the other, never two runs."""
    running = 0
    most = 0

    async def run() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.Event().wait()
        finally:
            running -= 1

    service = Service("sink", run, backoff=QUICK)
    service.start()
    await until(lambda: running == 1, what="the first run")
    between: list[str] = []

    async def note(name: str) -> None:
        between.append(name)

    await asyncio.gather(service.restart(lambda: note("a")), service.restart(lambda: note("b")))
    await until(lambda: running == 1, what="the run")
    assert (most, sorted(between), service.state) == (1, ["a", "b"], "running")
    await service.stop()
