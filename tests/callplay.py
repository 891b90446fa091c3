"""Play normalised events through the call fold as the writer would, without a database."""

from __future__ import annotations

from collections.abc import Iterable

from bridge import calls
from bridge.events import Event


class Player:
    """The outbox's view of events: dedup by id, the fold per call, derived events added."""

    def __init__(self, *, settle_s: float = 10.0) -> None:
        self.settle_s = settle_s
        self.records: dict[tuple[str, str], calls.Record] = {}
        self.known: set[str] = set()
        self.committed: list[Event] = []

    def play(self, events: Iterable[Event], *, now: float = 0.0) -> list[Event]:
        """Commit ``events``; returns what they added, in commit order."""
        added: list[Event] = []
        for event in events:
            stored = event.id in self.known
            if not calls.is_call_event(event):
                emit = [] if stored else [event]
            else:
                key = (event.source, event.subject)
                record = self.records.get(key)
                step = calls.fold(record, event, now=now, settle_s=self.settle_s, stored=stored)
                self.records[key] = step.record
                emit = step.emit
            for out in emit:
                if out.id not in self.known:
                    self.known.add(out.id)
                    added.append(out)
        self.committed.extend(added)
        return added

    def settle(self, *, now: float) -> list[Event]:
        """Let every settle window that has passed by ``now`` decide."""
        added = [e for r in self.records.values() for e in calls.settle(r, now=now)]
        added = [e for e in added if e.id not in self.known]
        self.known.update(e.id for e in added)
        self.committed.extend(added)
        return added


def types(events: Iterable[Event]) -> list[str]:
    return [event.type for event in events]
