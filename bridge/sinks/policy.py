"""The webhook retry policy: pure decisions, no I/O, no clock (times are passed in).

``classify`` turns the outcome of one delivery attempt into what happens next, following the
Standard Webhooks spec ("Delivery success and failure", "Deliverability and reliability") and
RFC 9110 for ``Retry-After``. ``Breaker`` is a per-sink circuit breaker, also pure: the caller
asks it before an attempt and tells it the result.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal

from bridge.errors import TransportError

# Delays before attempt 1, 2, ... 8: the start of the spec's example schedule (Svix's).
DEFAULT_SCHEDULE_S: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER: Final = 0.2
MAX_RETRY_AFTER_S: Final = 86400.0

_DELAY_SECONDS = re.compile(r"[0-9]+")


class Action(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"  # to the dead-letter list; can be re-driven
    DISABLE = "disable"  # stop the sink: the receiver asked for no more (410)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float | None = None  # only for RETRY
    reason: str = ""


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait, capped at one day; ``None`` if malformed.

    RFC 9110 section 10.2.3: ``Retry-After = HTTP-date / delay-seconds``. A date in the past
    means "now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(int(text)), MAX_RETRY_AFTER_S)
    try:
        # Handles the three HTTP-date forms a recipient must accept (RFC 9110 section 5.6.7):
        # IMF-fixdate, the obsolete RFC 850 form and asctime.
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime carries no zone; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def _retryable(
    reason: str,
    *,
    retry_after: str | None,
    attempt: int,
    schedule: Sequence[float],
    rng: random.Random,
    now: datetime,
) -> Decision:
    if attempt >= len(schedule):
        return Decision(Action.DEAD, reason=f"retries exhausted after {attempt} attempts: {reason}")
    # Spec: exponential backoff "with some level of random jitter" so that endpoints failing
    # under our own load are not hit by every retry at once.
    delay = max(schedule[attempt], 0.0) * rng.uniform(1 - JITTER, 1 + JITTER)
    wait = retry_after_s(retry_after, now)
    if wait is not None and wait > delay:
        # Never sooner than the receiver asked (RFC 9110 section 10.2.3).
        delay = wait
        reason = f"{reason} (Retry-After {wait:g} s)"
    return Decision(Action.RETRY, delay_s=delay, reason=reason)


def classify(
    *,
    status: int | None,
    error: BaseException | None,
    retry_after: str | None,
    attempt: int,
    schedule: Sequence[float],
    rng: random.Random,
    now: datetime,
) -> Decision:
    """What to do after attempt number ``attempt`` (1 for the first) ended as given.

    ``status`` is the response status if one arrived (it wins over ``error``); ``error`` what
    the attempt raised otherwise. ``schedule[attempt]`` is the base delay before the next
    attempt; when there is none left the event is dead.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, not {attempt}")

    def retry(reason: str) -> Decision:
        return _retryable(
            reason, retry_after=retry_after, attempt=attempt, schedule=schedule, rng=rng, now=now
        )

    if status is not None:
        # Spec, "Delivery success and failure".
        if 200 <= status <= 299:
            return Decision(Action.DELIVERED, reason=f"HTTP {status}")
        if status == 410:
            return Decision(Action.DISABLE, reason="HTTP 410 Gone: the receiver wants no more")
        if status in (408, 429) or 500 <= status <= 599:
            return retry(f"HTTP {status}")
        if 300 <= status <= 399:
            # Spec: redirects are failures, not followed; the URL should be updated instead.
            return Decision(Action.DEAD, reason=f"HTTP {status}: redirect not followed")
        if 400 <= status <= 499:
            return Decision(Action.DEAD, reason=f"HTTP {status}")
        return Decision(Action.DEAD, reason=f"unexpected HTTP status {status}")
    if error is None:
        return Decision(Action.DEAD, reason="attempt ended with neither a status nor an error")
    name = type(error).__name__
    if isinstance(error, TimeoutError):  # asyncio's, aiohttp's ServerTimeoutError
        return retry(f"timeout ({name})")
    if isinstance(error, TransportError | OSError):
        return retry(f"network error ({name}: {error})")
    if not isinstance(error, Exception):
        # Cancelled (shutdown) or interrupted: says nothing about the receiver.
        return retry(f"interrupted ({name})")
    return Decision(Action.DEAD, reason=f"unexpected error ({name}: {error})")


def receiver_failed(status: int | None, error: BaseException | None) -> bool:
    """Was the receiver at fault (what ``classify`` retries), whatever retries are left?

    What the circuit breaker counts: network errors, timeouts, 408, 429 and 5xx.
    """
    if status is not None:
        return status in (408, 429) or 500 <= status <= 599
    return isinstance(error, TimeoutError | TransportError | OSError)


BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class Breaker:
    """A per-sink circuit breaker, as a state machine over caller-supplied times.

    Closed: every attempt is allowed. ``threshold`` consecutive failures open it. Open: nothing
    is allowed until the cool-down has passed; then it is half-open and lets exactly one probe
    through. The probe's success closes it (and resets the cool-down); its failure re-opens it
    with the cool-down doubled, up to ``max_cool_down_s``. ``now`` is any clock in seconds, the
    same one for every call.

    Results recorded while open come from attempts started before it opened; they are ignored.
    In half-open, the next result recorded is taken as the probe's.
    """

    threshold: int = 5
    cool_down_s: float = 30.0
    max_cool_down_s: float = 600.0
    _state: BreakerState = field(default="closed", init=False, repr=False)
    _failures: int = field(default=0, init=False, repr=False)
    _failing_since: float | None = field(default=None, init=False, repr=False)
    _opened_at: float | None = field(default=None, init=False, repr=False)
    _current_cool_down_s: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"breaker threshold must be >= 1, not {self.threshold}")
        if self.cool_down_s <= 0:
            raise ValueError(f"breaker cool_down_s must be > 0, not {self.cool_down_s}")
        if self.max_cool_down_s < self.cool_down_s:
            raise ValueError(
                f"breaker max_cool_down_s ({self.max_cool_down_s}) is below cool_down_s "
                f"({self.cool_down_s})"
            )
        self._current_cool_down_s = self.cool_down_s

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures recorded since the last success."""
        return self._failures

    @property
    def failing_since(self) -> float | None:
        """When the current run of failures began; ``None`` when the last result was a success."""
        return self._failing_since

    @property
    def opened_at(self) -> float | None:
        """When it last opened; ``None`` while closed."""
        return self._opened_at

    @property
    def probe_at(self) -> float | None:
        """When an open breaker will let a probe through; ``None`` unless open."""
        if self._state != "open" or self._opened_at is None:
            return None
        return self._opened_at + self._current_cool_down_s

    def allow(self, now: float) -> bool:
        """May an attempt start now? Handing out the half-open probe counts as its start."""
        if self._state == "closed":
            return True
        if self._state == "half_open":
            return False  # the one probe is out
        probe_at = self.probe_at
        if probe_at is not None and now >= probe_at:
            self._state = "half_open"
            return True
        return False

    def record(self, ok: bool, now: float) -> None:
        """Record an attempt's result."""
        if self._state == "open":
            return
        if ok:
            self._state = "closed"
            self._failures = 0
            self._failing_since = None
            self._opened_at = None
            self._current_cool_down_s = self.cool_down_s
            return
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if self._state == "half_open":
            self._current_cool_down_s = min(self._current_cool_down_s * 2, self.max_cool_down_s)
            self._open(now)
        elif self._failures >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
