"""The webhook retry policy and circuit breaker: pure functions, times passed in."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import TransportError
from bridge.sinks.policy import (
    DEFAULT_SCHEDULE_S,
    MAX_RETRY_AFTER_S,
    Action,
    Breaker,
    Decision,
    classify,
    retry_after_s,
)

NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
SCHEDULE = (0.0, 10.0, 100.0, 1000.0)


def decide(
    status: int | None = None,
    error: BaseException | None = None,
    *,
    retry_after: str | None = None,
    attempt: int = 1,
    schedule: tuple[float, ...] = SCHEDULE,
    seed: int = 7,
    now: datetime = NOW,
) -> Decision:
    return classify(
        status=status,
        error=error,
        retry_after=retry_after,
        attempt=attempt,
        schedule=schedule,
        rng=random.Random(seed),
        now=now,
    )


# -- statuses ---------------------------------------------------------------------------------


@given(st.integers(200, 299))
def test_any_2xx_is_delivered(status: int) -> None:
    """Every 2xx status is a delivery (spec: "2xx: Success")."""
    assert decide(status).action is Action.DELIVERED


def test_410_disables_the_sink() -> None:
    """410 Gone means the receiver wants no more: the sink is disabled."""
    assert decide(410).action is Action.DISABLE


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_retried(status: int) -> None:
    """Request Timeout and Too Many Requests are retried."""
    d = decide(status)
    assert d.action is Action.RETRY
    assert str(status) in d.reason


@given(st.integers(500, 599))
def test_any_5xx_is_retried(status: int) -> None:
    """Every 5xx is retried."""
    assert decide(status).action is Action.RETRY


@given(st.integers(300, 399))
def test_3xx_is_dead_not_followed(status: int) -> None:
    """Redirects are not followed: dead, with the status in the reason."""
    d = decide(status)
    assert d.action is Action.DEAD
    assert str(status) in d.reason
    assert "redirect" in d.reason


@given(st.integers(400, 499).filter(lambda s: s not in (408, 410, 429)))
def test_other_4xx_is_dead_with_status(status: int) -> None:
    """A 4xx other than 408/410/429 goes to the dead-letter list, naming the status."""
    d = decide(status)
    assert d.action is Action.DEAD
    assert f"HTTP {status}" in d.reason


@pytest.mark.parametrize("status", [100, 101, 199, 0, 99, 600, 999])
def test_informational_and_invalid_statuses_are_dead(status: int) -> None:
    """1xx and statuses outside 100-599 are dead."""
    assert decide(status).action is Action.DEAD


def test_non_retry_decisions_have_no_delay() -> None:
    """Only RETRY carries a delay."""
    for status in (200, 404, 410):
        assert decide(status, retry_after="60").delay_s is None


def test_status_wins_over_error() -> None:
    """When a response arrived, its status decides even if reading on failed."""
    assert decide(200, TransportError("cut")).action is Action.DELIVERED


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        TransportError("ServerDisconnectedError: Server disconnected"),
        TransportError("ClientPayloadError: cut"),
        ConnectionRefusedError(111, "refused"),
        OSError(101, "unreachable"),
    ],
    ids=type,
)
def test_network_errors_are_retried(error: BaseException) -> None:
    """Transport errors (the sender's, from aiohttp) and OS errors are retried, naming them."""
    d = decide(error=error)
    assert d.action is Action.RETRY
    assert "network error" in d.reason
    assert type(error).__name__ in d.reason


@pytest.mark.parametrize("error", [TimeoutError(), TimeoutError("aiohttp read timeout")], ids=str)
def test_timeouts_are_retried(error: BaseException) -> None:
    """Timeouts are retried (the sender keeps aiohttp's own timeouts TimeoutErrors)."""
    d = decide(error=error)
    assert d.action is Action.RETRY
    assert "timeout" in d.reason


def test_unexpected_error_is_dead() -> None:
    """An exception that is not a network error (a bug) dead-letters the event for a re-drive."""
    d = decide(error=ValueError("bad body"))
    assert d.action is Action.DEAD
    assert "ValueError" in d.reason


def test_cancellation_is_not_a_verdict_on_the_receiver() -> None:
    """An attempt cut by cancellation is retried, not dead-lettered."""
    assert decide(error=asyncio.CancelledError()).action is Action.RETRY


def test_no_status_and_no_error_is_dead() -> None:
    """An outcome with neither status nor error is dead rather than retried forever."""
    assert decide().action is Action.DEAD


def test_attempt_must_be_counted_from_one() -> None:
    """attempt is how many attempts were made: 0 is a caller bug."""
    with pytest.raises(ValueError, match="attempt"):
        decide(503, attempt=0)


# -- schedule and jitter ----------------------------------------------------------------------


def test_default_schedule_is_svix_like() -> None:
    """Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h."""
    assert DEFAULT_SCHEDULE_S == (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)


def test_first_failure_waits_the_second_schedule_entry() -> None:
    """After attempt 1 the delay is schedule[1] (5 s by default), jittered by at most 20 %."""
    d = decide(503, attempt=1, schedule=DEFAULT_SCHEDULE_S)
    assert d.delay_s is not None
    assert 4.0 <= d.delay_s <= 6.0


@given(attempt=st.integers(1, len(SCHEDULE) - 1), seed=st.integers(0, 2**32))
def test_jitter_within_twenty_percent(attempt: int, seed: int) -> None:
    """The delay is schedule[attempt] +/- 20 %."""
    d = decide(503, attempt=attempt, seed=seed)
    base = SCHEDULE[attempt]
    assert d.delay_s is not None
    assert 0.8 * base <= d.delay_s <= 1.2 * base


def test_jitter_varies() -> None:
    """Different draws give different delays (the jitter is not a constant factor)."""
    delays = {decide(503, attempt=2, seed=seed).delay_s for seed in range(20)}
    assert len(delays) > 10


def test_seeded_rng_is_reproducible() -> None:
    """The same seed gives the same delay: no hidden randomness."""
    assert decide(503, attempt=3, seed=42) == decide(503, attempt=3, seed=42)


def test_negative_schedule_entry_never_gives_negative_delay() -> None:
    """A negative base delay is treated as 0."""
    assert decide(503, schedule=(0.0, -5.0)).delay_s == 0.0


def test_last_scheduled_retry_still_retries() -> None:
    """attempt len(schedule)-1 still gets the last entry's delay."""
    assert decide(503, attempt=len(SCHEDULE) - 1).action is Action.RETRY


@pytest.mark.parametrize("error", [None, TimeoutError()])
def test_exhausted_schedule_is_dead(error: BaseException | None) -> None:
    """Once attempt >= len(schedule) a retryable failure is dead: "retries exhausted"."""
    d = decide(None if error else 503, error, attempt=len(SCHEDULE), retry_after="5")
    assert d.action is Action.DEAD
    assert "retries exhausted" in d.reason
    assert d.delay_s is None


def test_default_schedule_allows_eight_attempts() -> None:
    """With the default schedule attempt 8 is the last one."""
    assert decide(503, attempt=7, schedule=DEFAULT_SCHEDULE_S).action is Action.RETRY
    assert decide(503, attempt=8, schedule=DEFAULT_SCHEDULE_S).action is Action.DEAD


def test_empty_schedule_means_no_retries() -> None:
    """An empty schedule dead-letters on the first failure."""
    assert decide(503, schedule=()).action is Action.DEAD


# -- Retry-After ------------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured() -> None:
    """Retry-After: 120 on a 429 waits 120 s, not the 10 s schedule entry."""
    d = decide(429, retry_after="120")
    assert d.delay_s == 120.0
    assert "Retry-After" in d.reason


def test_shorter_retry_after_keeps_the_schedule() -> None:
    """A Retry-After shorter than the scheduled delay does not make us retry sooner."""
    assert decide(503, retry_after="1", attempt=3) == decide(503, attempt=3)


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 01 May 2024 09:35:00 GMT",  # IMF-fixdate
        "Wednesday, 01-May-24 09:35:00 GMT",  # obsolete RFC 850
        "Wed May  1 09:35:00 2024",  # asctime
    ],
)
def test_retry_after_http_date_forms(value: str) -> None:
    """All three HTTP-date forms (RFC 9110 5.6.7) are read: 5 minutes from NOW."""
    assert decide(503, retry_after=value).delay_s == 300.0


def test_retry_after_date_in_the_past_keeps_the_schedule() -> None:
    """A date already past asks for no wait: the schedule decides."""
    assert decide(503, retry_after="Wed, 01 May 2024 09:00:00 GMT") == decide(503)


def test_retry_after_capped_at_one_day() -> None:
    """A huge Retry-After (seconds or date) is capped at one day."""
    assert decide(503, retry_after="999999999").delay_s == MAX_RETRY_AFTER_S == 86400.0
    far = "Fri, 01 May 2099 09:30:00 GMT"
    assert decide(503, retry_after=far).delay_s == MAX_RETRY_AFTER_S


@pytest.mark.parametrize("value", ["", "soon", "1.5", "-5", "+60", "1e3", "60 s", "Mon"])
def test_malformed_retry_after_ignored(value: str) -> None:
    """A malformed Retry-After is ignored: the decision is as if it were absent."""
    assert retry_after_s(value, NOW) is None
    assert decide(503, retry_after=value) == decide(503)


def test_naive_now_is_taken_as_utc() -> None:
    """A naive ``now`` is read as UTC rather than failing the comparison."""
    naive = NOW.replace(tzinfo=None) + timedelta(minutes=1)
    assert retry_after_s("Wed, 01 May 2024 09:35:00 GMT", naive) == 240.0


@given(
    status=st.sampled_from([408, 429, 500, 502, 503, 504]),
    attempt=st.integers(1, 20),
    schedule=st.lists(st.floats(-1e6, 1e6), max_size=10).map(tuple),
    retry_after=st.none() | st.integers(0, 10**9),
    seed=st.integers(0, 2**32),
)
def test_delay_never_negative_nor_before_retry_after(
    status: int, attempt: int, schedule: tuple[float, ...], retry_after: int | None, seed: int
) -> None:
    """A retry's delay is >= 0 and >= Retry-After (as capped) whenever one is given."""
    d = decide(
        status,
        retry_after=None if retry_after is None else str(retry_after),
        attempt=attempt,
        schedule=schedule,
        seed=seed,
    )
    if d.action is Action.RETRY:
        assert d.delay_s is not None
        assert d.delay_s >= 0
        if retry_after is not None:
            assert d.delay_s >= min(retry_after, MAX_RETRY_AFTER_S)
    else:
        assert d.action is Action.DEAD
        assert attempt >= len(schedule)


# -- circuit breaker --------------------------------------------------------------------------


def opened(threshold: int = 3, at: float = 100.0) -> Breaker:
    b = Breaker(threshold=threshold, cool_down_s=10.0, max_cool_down_s=35.0)
    for _ in range(threshold):
        b.record(False, at)
    return b


def test_breaker_starts_closed_and_allows() -> None:
    """A new breaker is closed and lets every attempt through."""
    b = Breaker()
    assert b.state == "closed"
    assert all(b.allow(t) for t in range(10))
    assert b.opened_at is None
    assert b.failing_since is None
    assert b.probe_at is None


def test_breaker_stays_closed_below_threshold() -> None:
    """threshold-1 consecutive failures keep it closed, counting them."""
    b = Breaker(threshold=3)
    b.record(False, 1.0)
    b.record(False, 2.0)
    assert b.state == "closed"
    assert b.allow(3.0)
    assert b.failures == 2
    assert b.failing_since == 1.0


def test_breaker_success_resets_the_count() -> None:
    """Failures that are not consecutive never open it."""
    b = Breaker(threshold=2)
    for t in range(10):
        b.record(False, float(t))
        b.record(True, float(t))
    assert b.state == "closed"
    assert b.failures == 0
    assert b.failing_since is None


def test_breaker_opens_at_threshold() -> None:
    """threshold consecutive failures open it and it refuses attempts."""
    b = opened(threshold=3, at=100.0)
    assert b.state == "open"
    assert b.opened_at == 100.0
    assert b.failing_since == 100.0
    assert not b.allow(100.0)
    assert not b.allow(109.9)


def test_breaker_half_open_lets_exactly_one_probe() -> None:
    """After the cool-down exactly one probe goes through; others wait for its result."""
    b = opened()
    assert b.probe_at == 110.0
    assert b.allow(110.0)
    assert b.state == "half_open"
    assert not b.allow(110.0)
    assert not b.allow(500.0)


def test_breaker_successful_probe_closes() -> None:
    """A successful probe closes it and clears opened_at and failing_since."""
    b = opened()
    b.allow(110.0)
    b.record(True, 111.0)
    assert b.state == "closed"
    assert b.allow(111.0)
    assert b.opened_at is None
    assert b.failing_since is None
    assert b.failures == 0


def test_breaker_failed_probe_reopens_with_doubled_cool_down() -> None:
    """A failed probe re-opens it, waiting twice as long; failing_since is kept."""
    b = opened()
    b.allow(110.0)
    b.record(False, 111.0)
    assert b.state == "open"
    assert b.opened_at == 111.0
    assert b.probe_at == 131.0
    assert not b.allow(130.0)
    assert b.allow(131.0)
    assert b.failing_since == 100.0


def test_breaker_cool_down_capped() -> None:
    """Doubling stops at max_cool_down_s."""
    b = opened()
    t = 110.0
    waits = []
    for _ in range(4):
        assert b.allow(t)
        b.record(False, t)
        assert b.probe_at is not None
        waits.append(b.probe_at - t)
        t = b.probe_at
    assert waits == [20.0, 35.0, 35.0, 35.0]


def test_breaker_cool_down_resets_after_close() -> None:
    """After closing, the next opening waits the base cool-down again."""
    b = opened()
    b.allow(110.0)
    b.record(False, 110.0)  # cool-down now 20
    b.allow(130.0)
    b.record(True, 130.0)
    for _ in range(3):
        b.record(False, 200.0)
    assert b.probe_at == 210.0


def test_breaker_ignores_results_while_open() -> None:
    """Results of attempts started before it opened change nothing."""
    b = opened()
    b.record(True, 105.0)
    b.record(False, 106.0)
    assert b.state == "open"
    assert b.probe_at == 110.0


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0}, {"cool_down_s": 0.0}, {"cool_down_s": 10.0, "max_cool_down_s": 5.0}],
)
def test_breaker_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    """Nonsensical settings are refused at construction."""
    with pytest.raises(ValueError, match="breaker"):
        Breaker(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 50)), max_size=60))
def test_breaker_never_two_probes_out(steps: list[tuple[bool, float]]) -> None:
    """However results arrive, half-open never lets a second attempt through before a result."""
    b = Breaker(threshold=2, cool_down_s=5.0, max_cool_down_s=20.0)
    now = 0.0
    for ok, dt in steps:
        now += dt
        if b.allow(now):
            if b.state == "half_open":
                assert not b.allow(now)
            b.record(ok, now)
