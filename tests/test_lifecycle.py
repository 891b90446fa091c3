"""Supervised services: a task that dies is said, counted, restarted; readiness tells."""

from __future__ import annotations

import asyncio

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
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a bug: swallows its cancellation

    service = Service("stubborn", stubborn, backoff=QUICK)
    service.start()
    await asyncio.sleep(0)  # let it start waiting
    with capture_logs() as logs:
        async with asyncio.timeout(5):
            await service.stop(timeout_s=0.1)
    assert [entry["event"] for entry in logs] == ["task_stop_timed_out"]
    assert service.state == "stopped"
    release.set()  # so the test's loop can close
