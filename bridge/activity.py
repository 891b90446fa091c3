"""The ``activity`` log line: what each source did since the previous one.

Metrics are for dashboards; this line is for whoever reads the log (``journalctl -u
pbx-bridge``) and wants to know the bridge is busy without a Prometheus: once per interval, per
source, the pushes answered, the realtime messages received and the events committed. It reads
the same plain counters as ``/metrics``, so it costs nothing per event.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from bridge.metrics import Observed

log = structlog.get_logger("bridge.activity")


def _source_name(event_source: str) -> str:
    return event_source.rsplit("/", 1)[-1]  # an event source is /vendor/name


class Activity:
    """The counters' deltas between two calls of :meth:`since_last`."""

    def __init__(self, daemon: Observed) -> None:
        self._daemon = daemon
        self._last = self._read()

    def _read(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        daemon = self._daemon
        pushes: Counter[str] = Counter()
        for (source, _), count in list(daemon.ingest.responses.items()):
            pushes[source] += count
        messages = Counter(
            {realtime.name: realtime.status.messages for realtime in daemon.realtime}
        )
        events: Counter[str] = Counter()
        for (source, _), count in list(daemon.writer.committed_by.items()):
            events[_source_name(source)] += count
        return pushes, messages, events

    def since_last(self) -> dict[str, Any] | None:
        """Per source what happened since the last call (or since this was made): pushes,
        messages, events (each left out where zero); ``None`` when nothing happened."""
        now = self._read()
        # Counter subtraction keeps positive counts only: a sink or source swapped by a reload
        # (its counts starting again) shows nothing rather than a negative number.
        pushes, messages, events = (new - old for new, old in zip(now, self._last, strict=True))
        self._last = now
        if not (pushes or messages or events):
            return None
        fields: dict[str, Any] = {}
        for key, counts in (("pushes", pushes), ("messages", messages), ("events", events)):
            if counts:
                fields[key] = dict(sorted(counts.items()))
        return fields


async def report(daemon: Observed, interval_s: float = 60.0) -> None:
    """Log ``activity`` every ``interval_s``: pushes answered (by source, ``_unknown`` for
    pushes to no configured source), realtime messages and events committed (by source) since
    the previous line. Runs until cancelled.

    An interval in which nothing happened logs nothing: an idle bridge stays quiet (its
    ``/metrics`` and ``/readyz`` still say it is up).
    """
    activity = Activity(daemon)
    while True:
        await asyncio.sleep(interval_s)
        fields = activity.since_last()
        if fields is not None:
            log.info("activity", interval_s=interval_s, **fields)
