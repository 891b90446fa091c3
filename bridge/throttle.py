"""Rate-limited log lines: at most one per key per interval, the rest counted.

A flood of refused pushes (or failed logins) must not flood the log. Each caller names what a
line is about with a key of its own choosing (``("unknown_source",)``, ``("auth", source)``);
the first line for a key goes through, the ones in the next ``interval_s`` are only counted,
and the next one to go through says how many were held back (``suppressed=N``).

Keys must come from a small set the operator controls (a reason, a configured source), never
from what a client sent: an attacker's names go in the line, not the key. The table is bounded
all the same (``max_keys``; the oldest key is forgotten, with its count). A count held back
when the flood stops is reported only if that key logs again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

Clock = Callable[[], float]  # seconds, monotonic

MAX_KEYS: Final = 1024


@dataclass(slots=True)
class _Seen:
    passed_at: float  # when the last line for the key went through
    held: int = 0  # lines held back since


class Throttle:
    """Lets a line through at most once per key per ``interval_s``, counting the rest."""

    def __init__(
        self, interval_s: float, *, clock: Clock = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        if interval_s < 0 or max_keys < 1:
            raise ValueError("interval_s must be >= 0 and max_keys >= 1")
        self._interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[Hashable, _Seen] = {}

    def allow(self, key: Hashable) -> int | None:
        """``None``: hold this line back (it is counted). Otherwise let it through, and this is
        how many lines for ``key`` were held back since the last one (0 if none)."""
        now = self._clock()
        seen = self._keys.get(key)
        if seen is None:
            if len(self._keys) >= self._max_keys:
                del self._keys[next(iter(self._keys))]  # the oldest key
            self._keys[key] = _Seen(now)
            return 0
        if now - seen.passed_at < self._interval_s:
            seen.held += 1
            return None
        held, seen.passed_at, seen.held = seen.held, now, 0
        return held

    def log(self, key: Hashable, emit: Callable[..., Any], event: str, **fields: Any) -> bool:
        """``emit(event, **fields)`` unless held back, with ``suppressed=N`` when N > 0.

        ``emit`` is a logger method (``log.warning``); returns whether the line went through.
        """
        held = self.allow(key)
        if held is None:
            return False
        if held:
            fields["suppressed"] = held
        emit(event, **fields)
        return True
