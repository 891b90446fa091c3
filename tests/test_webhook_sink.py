"""Webhook sinks against real receivers on loopback: at least once, signed, ordered per call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import config as config_module
from bridge.app import Daemon
from bridge.config import WebhookSinkConfig
from bridge.sinks.sender import Response
from bridge.sinks.webhook import WebhookSink
from bridge.store import deliveries
from tests.conftest import base_url, daemon_config, until, until_true
from tests.receiver import OLD_SECRET, SECRET, Receiver, serve

FAST = [0.0, 0.05, 0.05, 0.05, 0.05]


def sink(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    settings = {
        "name": "crm",
        "type": "webhook",
        "url": receiver.url,
        "secrets": [SECRET],
        "retry_schedule_s": FAST,
        "concurrency": 4,
        **extra,
    }
    return settings


def dial(call: str, agent: str, t: float) -> dict[str, Any]:
    """A CooCenter dialbegin: call.initiated + call.ringing on subject call/<call>."""
    return {
        "event": "dialbegin",
        "timestamp": str(t),
        "channel": "DAHDI/i1/18782985586-51",
        "calleridnum": "18782985586",
        "destcalleridnum": agent,
        "destuniqueid": f"{call}.{agent}",
        "uniqueid": call,
    }


def status(n: int) -> dict[str, Any]:
    return {"event": "extensionstatus", "exten": str(800 + n), "status": "0", "statustext": "Idle"}


async def push(daemon: Daemon, *payloads: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        for payload in payloads:
            async with http.post(base_url(daemon) + "/ingest/coocenter", json=payload) as r:
                assert r.status == 200


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


async def start(tmp_path: Path, *sinks: dict[str, Any]) -> Daemon:
    return Daemon(daemon_config(tmp_path, sinks=list(sinks)))


async def test_every_event_arrives_signed_and_in_order(tmp_path: Path, receiver: Receiver) -> None:
    """All committed events reach the receiver, each signature verifies, seq order per call."""
    async with await start(tmp_path, sink(receiver)) as daemon:
        await push(daemon, *(dial(f"c{n}", "801", 1_700_000_000 + n) for n in range(20)))
        await push(daemon, *(status(n) for n in range(20)))
        await until(lambda: len({e["id"] for e in receiver.delivered()}) == 60, what="60 events")
        await until(lambda: daemon.sinks[0].cursor == 60, what="the cursor")
        assert daemon.hub.subscribers == 0  # a sink reads the outbox: it is no subscriber
    assert receiver.bad_signatures == 0
    by_subject: dict[str, list[int]] = {}
    for event in receiver.delivered():
        by_subject.setdefault(event["subject"], []).append(event["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_subject.values())


async def test_a_stuck_call_holds_only_its_own_events(tmp_path: Path) -> None:
    """While one call's event waits for retries, other calls overtake it; its order holds."""

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        stuck = event["subject"] == "call/stuck" and event["type"] == "call.initiated"
        return (503, {}) if stuck and seen < 3 else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        async with await start(tmp_path, sink(receiver)) as daemon:
            await push(daemon, dial("stuck", "801", 1_700_000_000))
            await push(daemon, *(dial(f"other{n}", "802", 1_700_000_001 + n) for n in range(5)))
            await until(lambda: len({e["id"] for e in receiver.delivered()}) == 12, what="all")
        order = [(e["subject"], e["type"]) for e in receiver.delivered()]
        stuck_first = order.index(("call/stuck", "call.initiated"))
        assert order.index(("call/stuck", "call.ringing")) > stuck_first  # its own order held
        assert stuck_first > order.index(("call/other4", "call.ringing"))  # others overtook it
        tries = [a for a in receiver.attempts if a[1]["subject"] == "call/stuck"]
        assert [status for _, _, status in tries] == [503, 503, 503, 200, 200]


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 429 with Retry-After: 1 is not retried sooner than a second later."""

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "1"}) if seen == 0 else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        async with await start(tmp_path, sink(receiver)) as daemon:
            await push(daemon, status(1))
            await until(lambda: len(receiver.delivered()) == 1, what="the retry")
        first, second = receiver.tries(receiver.delivered()[0]["id"])
        assert second - first >= 1.0


async def test_gone_disables_the_sink_durably(tmp_path: Path) -> None:
    """410 Gone stops the sink at once and for good: a restart does not enable it again."""
    async with serve(Receiver(script=lambda event, seen: (410, {}))) as receiver:
        async with await start(tmp_path, sink(receiver, concurrency=1)) as daemon:
            crm = daemon.sinks[0]
            await push(daemon, status(1), status(2))
            await until(lambda: receiver.attempts, what="the first attempt")
            await until_true(lambda: stored_disable(daemon), what="the disable on disk")
            await push(daemon, status(3))
            async with aiohttp.ClientSession() as http:
                async with http.get(base_url(daemon) + "/v1/sinks") as response:
                    (shown,) = (await response.json())["sinks"]
            assert crm.service.alive  # disabled is a state, not a dead task
        async with await start(tmp_path, sink(receiver, concurrency=1)) as daemon:
            await push(daemon, status(4))
            await until(lambda: daemon.sinks[0].dispatcher.disabled, what="the disable, loaded")
            dispatcher, now = daemon.sinks[0].dispatcher, time.time()
            assert (dispatcher.wants(now), dispatcher.poll(now)) == (0, [])
        assert len(receiver.attempts) == 1  # one at a time: the first answer stopped it
        assert "410" in shown["disabled"]


async def stored_disable(daemon: Daemon) -> bool:
    sql = "SELECT disabled_reason FROM sink_cursors WHERE sink = 'crm'"
    row = await daemon.reader.run(lambda conn: conn.execute(sql).fetchone())
    return row is not None and row[0] is not None


async def test_receiver_back_after_an_outage_gets_the_waiting_events_at_once(
    tmp_path: Path,
) -> None:
    """With the breaker open and a retry an hour away, the probe's success delivers it now.

    Before the dispatcher, the daemon spun at full CPU here and delivered nothing, not even new
    calls, until the retry slot.
    """
    down = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if down["on"] else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        settings = sink(
            receiver,
            concurrency=1,
            retry_schedule_s=[0, 3600, 3600],
            breaker_threshold=1,
            breaker_cool_down_s=0.2,
        )
        async with await start(tmp_path, settings) as daemon:
            await push(daemon, status(1))
            await until(lambda: daemon.sinks[0].breaker.state == "open", what="the breaker")
            down["on"] = False
            await push(daemon, status(2))  # a new call: not stuck behind the old one's slot
            await until(lambda: len(receiver.delivered()) == 2, what="both, well before an hour")
            assert daemon.sinks[0].breaker.state == "closed"
            assert daemon.sinks[0].dispatcher.stats.probes >= 1


async def test_client_errors_are_dead_lettered_and_can_be_redriven(tmp_path: Path) -> None:
    """A 4xx dead-letters the event (others continue); retrying it later delivers it."""
    rejecting = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        refused = rejecting["on"] and event["data"].get("extension") == "801"
        return (422, {}) if refused else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        async with await start(tmp_path, sink(receiver)) as daemon:
            await push(daemon, status(1), status(2))
            crm = daemon.sinks[0]

            async def dead_count(count: int) -> bool:
                return len(await crm.dead_letters()) == count

            await until_true(lambda: dead_count(1), what="one stored dead letter")
            await until(lambda: crm.stats.delivered == 1, what="the other event, not held up")
            (letter,) = await crm.dead_letters()
            assert letter["last_status"] == 422
            rejecting["on"] = False
            assert await crm.retry_dead(None) == 1
            await until(lambda: len(receiver.delivered()) == 2, what="the re-drive")
            await until_true(lambda: dead_count(0), what="the dead letter gone")


async def test_rotation_signs_with_both_secrets(tmp_path: Path) -> None:
    """During rotation a receiver that still has the old secret verifies too."""
    async with serve(Receiver(secret=OLD_SECRET)) as receiver:
        async with await start(tmp_path, sink(receiver, secrets=[SECRET, OLD_SECRET])) as daemon:
            await push(daemon, status(1))
            await until(lambda: len(receiver.delivered()) == 1, what="delivery")
        assert receiver.bad_signatures == 0


async def test_stale_event_types_expire(tmp_path: Path, receiver: Receiver) -> None:
    """An event older than its type's expiry is marked expired, not delivered."""
    async with await start(tmp_path, sink(receiver, expire_s={"call.ringing": 60})) as daemon:
        await push(daemon, dial("old", "801", 1_500_000_000))  # 2017: long expired
        await until(lambda: daemon.sinks[0].stats.expired == 1, what="expiry")
        await until(lambda: len(receiver.delivered()) == 1, what="the initiated event")
    assert [e["type"] for e in receiver.delivered()] == ["call.initiated"]


async def test_filters_by_type_and_source(tmp_path: Path, receiver: Receiver) -> None:
    """Only events matching the sink's types (and sources) are sent; the cursor passes the rest."""
    async with await start(tmp_path, sink(receiver, types=["extension.*"])) as daemon:
        await push(daemon, dial("c1", "801", 1_700_000_000), status(1))
        await until(lambda: daemon.sinks[0].cursor == 3, what="the cursor past everything")
    assert [e["type"] for e in receiver.delivered()] == ["extension.state"]


async def test_restart_resumes_without_resending(tmp_path: Path, receiver: Receiver) -> None:
    """After a clean restart, delivered events are not sent again; new ones are."""
    config = daemon_config(tmp_path, sinks=[sink(receiver)])
    async with Daemon(config) as daemon:
        await push(daemon, *(status(n) for n in range(10)))
        await until(lambda: daemon.sinks[0].cursor == 10, what="delivery")
    async with Daemon(config) as daemon:
        await push(daemon, status(10))
        await until(lambda: daemon.sinks[0].cursor == 11, what="delivery")
    ids = [e["id"] for e in receiver.delivered()]
    assert len(ids) == len(set(ids)) == 11


async def test_waiting_retries_survive_a_restart(tmp_path: Path) -> None:
    """An event waiting for a retry, and its call's later events, resume after a restart."""
    failing = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (500, {}) if failing["on"] and event["subject"] == "call/c1" else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        config = daemon_config(tmp_path, sinks=[sink(receiver, retry_schedule_s=[0, 0.5, 0.5])])
        async with Daemon(config) as daemon:
            await push(daemon, dial("c1", "801", 1_700_000_000), status(1))
            # Both c1 events recorded (waiting, held) and the other delivered: cursor past all.
            await until(lambda: daemon.sinks[0].cursor == 3, what="the cursor")
        failing["on"] = False
        async with Daemon(config) as daemon:
            await until(lambda: len(receiver.delivered()) == 3, what="the resumed retries")
            assert daemon.sinks[0].snapshot(3)["dead_lettered"] == 0
        delivered = [(e["subject"], e["type"]) for e in receiver.delivered()]
        assert delivered == [
            ("extension/801", "extension.state"),
            ("call/c1", "call.initiated"),
            ("call/c1", "call.ringing"),
        ]


async def test_operator_commands_through_the_api(tmp_path: Path) -> None:
    """`pbx-bridge sinks`, `dlq list|retry|purge` and `replay` work against the running daemon."""
    import io

    from bridge import opscli

    rejecting = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (400, {}) if rejecting["on"] else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        async with await start(tmp_path, sink(receiver)) as daemon:
            url, out = base_url(daemon), io.StringIO()
            await push(daemon, status(1), status(2))
            crm = daemon.sinks[0]

            async def stored() -> bool:
                return len(await crm.dead_letters()) == 2

            await until_true(stored, what="two stored dead letters")
            assert await opscli.sinks(url=url, token=None, out=out) == 0
            assert "dead=2" in out.getvalue()  # the stored dead letters
            common = {"url": url, "token": None, "sink": "crm", "out": out}
            assert await opscli.dlq(action="list", seqs=[], every=False, **common) == 0
            assert "2 dead letters" in out.getvalue()
            assert await opscli.dlq(action="purge", seqs=[1], every=False, **common) == 0
            rejecting["on"] = False
            assert await opscli.dlq(action="retry", seqs=[], every=True, **common) == 0
            await until(lambda: len(receiver.delivered()) == 1, what="the re-driven letter")
            assert receiver.delivered()[0]["seq"] == 2  # seq 1 was purged, not re-driven
            assert await opscli.replay(from_seq=1, **common) == 0
            await until(lambda: len(receiver.delivered()) == 3, what="the replayed history")


async def test_idle_sink_wakes_after_its_news_buffer_overflowed(tmp_path: Path) -> None:
    """A burst that overflows the sink's wake-up buffer does not leave it asleep afterwards."""
    async with serve(Receiver()) as receiver:
        config = daemon_config(tmp_path, sinks=[sink(receiver)], api={"client_queue": 1})
        async with Daemon(config) as daemon:
            # Each dialbegin commits two events at once: more than a 1-event buffer holds.
            await push(daemon, dial("c1", "801", 1_700_000_000))
            await until(lambda: len(receiver.delivered()) == 2, what="the burst")
            await push(daemon, status(99))  # the sink is idle now: this must wake it
            await until(lambda: len(receiver.delivered()) == 3, what="the next event")


async def test_batches_carry_at_most_one_event_per_call(tmp_path: Path) -> None:
    """batch_size N: JSON arrays of up to N events, signed as one message, order per call kept."""
    async with serve(Receiver(delay_s=0.01)) as receiver:
        async with await start(tmp_path, sink(receiver, batch_size=5, concurrency=1)) as daemon:
            await push(daemon, *(dial(f"c{n}", "801", 1_700_000_000 + n) for n in range(6)))
            await until(lambda: len(receiver.delivered()) == 12, what="all twelve events")
        assert receiver.bad_signatures == 0
        assert receiver.batches
        assert max(receiver.batches) <= 5
        for n in range(6):
            types = [e["type"] for e in receiver.delivered() if e["subject"] == f"call/c{n}"]
            assert types == ["call.initiated", "call.ringing"]


async def test_backlog_larger_than_memory_drains_without_new_traffic(tmp_path: Path) -> None:
    """After an outage, a backlog beyond max_in_memory is delivered in full with no new commits."""
    down = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if down["on"] else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        settings = sink(
            receiver,
            max_in_memory=16,
            retry_schedule_s=[0] + [0.05] * 50,
            breaker_cool_down_s=0.05,
        )
        async with await start(tmp_path, settings) as daemon:
            await push(daemon, *(status(n) for n in range(40)))
            await until(lambda: len(receiver.attempts) >= 5, what="failures during the outage")
            down["on"] = False
            await until(lambda: len({e["id"] for e in receiver.delivered()}) == 40, what="all 40")


async def _read_only(daemon: Daemon, on: bool) -> None:
    """Every write to the outbox fails (SQLite ``query_only``, as on a file remounted read-only)
    until it is lifted."""
    conn = daemon.writer._conn
    assert conn is not None
    await daemon.writer._run(conn.execute, f"PRAGMA query_only = {int(on)}")


async def test_a_sink_whose_outbox_writes_fail_is_restarted_and_delivers_everything(
    tmp_path: Path,
) -> None:
    """The outbox fails under a sink whose receiver is down: /readyz says so, and once writes
    work again the sink (restarted from the store, not left dead) delivers every event."""
    down = {"on": True}

    def script(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if down["on"] else (200, {})

    async with serve(Receiver(script=script)) as receiver:
        settings = sink(receiver, retry_schedule_s=[0] + [0.05] * 400, breaker_cool_down_s=0.05)
        async with await start(tmp_path, settings) as daemon:
            crm = daemon.sinks[0]
            await push(daemon, *(status(n) for n in range(20)))
            await until(lambda: len(receiver.attempts) >= 3, what="failing deliveries")
            await _read_only(daemon, True)
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    base_url(daemon) + "/ingest/coocenter", json=status(99)
                ) as response:
                    assert response.status == 503  # not committed: never a 2xx
                await until(lambda: crm.service.restarts >= 1, what="the sink's death")
                async with http.get(base_url(daemon) + "/readyz") as response:
                    ready = await response.json()
                    assert response.status == 503
                    assert not ready["outbox"]["writable"]
            await _read_only(daemon, False)
            down["on"] = False
            head = daemon.writer.last_seq
            await until(lambda: crm.cursor == head, timeout_s=20, what="every event delivered")
            async with aiohttp.ClientSession() as http:
                async with http.get(base_url(daemon) + "/readyz") as response:
                    assert response.status == 200, await response.text()
        delivered = {e["id"] for e in receiver.delivered()}
        assert len(delivered) == head


class _WrongAnswers:
    """A sender whose answers break the dispatcher (a status that is no number)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        self.calls += 1
        return Response(status="200")  # type: ignore[arg-type]

    async def close(self) -> None:
        return None


async def test_a_bug_in_a_delivery_ends_the_run_and_the_supervisor_restarts_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A delivery that raises past the sender would leak its slot for good (a sink that looks
    alive and sends nothing): it ends the run instead, which is logged, counted and restarted."""
    async with await start(tmp_path) as daemon:
        settings = config_module.from_dict(
            {"sinks": [sink(receiver)], "sources": [{"name": "coocenter", "vendor": "coocenter"}]}
        ).sinks[0]
        assert isinstance(settings, WebhookSinkConfig)
        wrong = _WrongAnswers()
        broken = WebhookSink(
            settings, writer=daemon.writer, reader=daemon.reader, hub=daemon.hub, sender=wrong
        )
        async with broken:
            await push(daemon, status(1))
            await until(lambda: broken.service.restarts >= 2, what="two restarts")
            assert broken.service.last_error is not None
            assert "TypeError" in broken.service.last_error
        assert wrong.calls >= 2  # started again from the store, the event sent again


async def test_redriving_all_dead_letters_goes_max_in_memory_at_a_time(tmp_path: Path) -> None:
    """A restart loads every waiting row: re-driving 'all' takes the oldest max_in_memory."""
    async with Daemon(daemon_config(tmp_path)) as daemon:

        def bury(conn: Any) -> None:
            conn.executemany(
                "INSERT INTO deliveries (sink, seq, subject, state, attempts, updated_at)"
                " VALUES ('crm', ?, 'call/x', 'dead', 8, 0)",
                [(seq,) for seq in range(1, 21)],
            )

        await daemon.writer.transact(bury)
        first = await deliveries.retry_dead(daemon.writer, "crm", None, 1.0, limit=16)
        second = await deliveries.retry_dead(daemon.writer, "crm", None, 1.0, limit=16)
        chosen = await deliveries.retry_dead(daemon.writer, "crm", [3, 4], 1.0, limit=16)
    assert (first, second, chosen) == (16, 4, 0)
