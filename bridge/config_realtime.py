"""A source's realtime subscription config: the ``[sources.realtime]`` table, and its checks.

A STOMP-over-WebSocket stream the bridge subscribes to (Coral IRIS IVDX realtime). Loaded (and
re-exported) by :mod:`bridge.config`, the one place that reads TOML: import it from there.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from bridge import redact


class RealtimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A STOMP-over-WebSocket subscription (Coral IRIS IVDX realtime)."""

    url: str
    destinations: tuple[str, ...] = ("/topic/STATE_UPDATE",)
    host: str = ""  # the CONNECT host header; Coral's own client sends it empty
    login: str | None = None
    passcode: str | None = None
    # STOMP heart-beats (ms): we can send every cx, we want to hear from the server every cy.
    heartbeat_ms: tuple[Annotated[int, msgspec.Meta(ge=0)], Annotated[int, msgspec.Meta(ge=0)]] = (
        10_000,
        10_000,
    )
    reconnect_min_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    subprotocols: tuple[str, ...] = ("v12.stomp", "v11.stomp", "v10.stomp")
    max_in_flight: Annotated[int, msgspec.Meta(gt=0)] = 1000


REALTIME_VENDORS = ("coral",)


def realtime_problems(realtime: RealtimeConfig, vendor: str) -> list[tuple[str, str]]:
    """Rules types alone cannot say, as ``(key, problem)``; the key ``""`` is the table itself."""
    if vendor not in REALTIME_VENDORS:
        return [("", f"vendor {vendor!r} has no realtime stream")]
    problems: list[tuple[str, str]] = []
    scheme, sep, _ = realtime.url.partition("://")
    if not sep or scheme not in ("ws", "wss"):
        problems.append(
            ("url", f"expected a ws:// or wss:// URL, got {redact.url(realtime.url)!r}")
        )
    if not realtime.destinations:
        problems.append(("destinations", "subscribe to at least one destination"))
    if realtime.reconnect_max_s < realtime.reconnect_min_s:
        problems.append(("reconnect_max_s", "must not be less than reconnect_min_s"))
    return problems
