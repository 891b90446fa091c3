"""What the daemon and the operations API need of a sink, webhook or NATS."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from bridge.config import SinkConfig
from bridge.lifecycle import Service


@runtime_checkable
class Sink(Protocol):
    name: str
    kind: str  # "webhook", "nats"
    service: Service  # its supervised run: started, stopped and restarted through this

    @property
    def config(self) -> SinkConfig: ...

    def snapshot(self, head: int) -> dict[str, Any]: ...

    async def replay(self, from_seq: int) -> None: ...

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s``, let what is in flight finish first (at most that long)."""
        ...


@runtime_checkable
class DeadLetters(Sink, Protocol):
    """A sink that gives up on events and keeps them (webhooks)."""

    async def dead_letters(self, *, limit: int = 1000) -> list[dict[str, Any]]: ...

    async def retry_dead(self, seqs: list[int] | None) -> int: ...

    async def purge_dead(self, seqs: list[int] | None) -> int: ...
