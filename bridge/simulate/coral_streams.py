"""Realistic Coral realtime channel-state streams: seeded call scenarios, pure (no I/O).

Each scenario is one leg's STOMP messages in publish order, as ``(destination, body)`` pairs, and
the ``call.*`` types a correct bridge commits for it (after the outbox's dedup by id, the call
fold of :mod:`bridge.calls`, and the missed-call settle window). The bodies have the keys of
the document's C# client (``uuid``, ``name``, ``number``, ``state``, ``topic``, ``subTopic``,
``talkingToNumber``); their states follow FreeSWITCH's order for the leg. A leg enters the
operator console's topic (``/topic/OC_<group>``: the console takes name and number from there)
and its later states come on ``/topic/STATE_UPDATE``; now and then a state is published on both
topics, which the bridge must count once. Hold and unhold are never doubled that way: each
receipt of one is its own event (see :mod:`bridge.vendors.coral_realtime`).

The messages carry no direction: the bridge infers one from the leg's own number. An inbound
leg's number is the outside caller's, so an abandoned caller (no bridge to an operator) is a
missed call once the settle window passes; an operator's leg out is an extension's, so no miss.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

Kind = Literal["answered", "abandoned", "outbound", "hold"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "abandoned", "outbound", "hold")

AGENTS: Final = tuple(str(n) for n in range(9000, 9012))
STATE_UPDATE: Final = "STATE_UPDATE"
BOTH_TOPICS_RATIO: Final = 0.2  # states (not hold/unhold) published on both topics
_NAMES: Final = ("Customer", "Asha Verma", "R K Traders", "", "UNKNOWN")


class Message(NamedTuple):
    """One STOMP MESSAGE: its ``destination`` header and its JSON body (as an object)."""

    destination: str
    body: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One leg's messages in publish order and the ``call.*`` types the bridge commits for it."""

    kind: Kind
    call_id: str
    messages: list[Message] = field(default_factory=list)
    expected_types: list[str] = field(default_factory=list)


def scenarios(rng: random.Random, *, count: int = 4, group: str = "778") -> list[Scenario]:
    """``count`` scenarios; the first four are one of each kind, then kinds are drawn."""
    kinds = [KINDS[n] if n < len(KINDS) else rng.choice(KINDS) for n in range(count)]
    return [scenario(kind, rng, group=group) for kind in kinds]


def scenario(kind: Kind, rng: random.Random, *, group: str = "778") -> Scenario:
    """One leg of the given kind, drawn from ``rng`` (the same seed gives the same leg)."""
    leg = _Leg(rng, group)
    if kind == "outbound":
        leg.outbound()
    else:
        caller = "09" + "".join(rng.choices("0123456789", k=9))
        leg.inbound(caller, rng.choice(_NAMES), answered=kind != "abandoned")
        if kind == "hold":
            for _ in range(rng.randint(1, 3)):  # hold, unhold, hold again: each one counts
                leg.send("CHANNEL_HOLD", "call.held")
                leg.send("CHANNEL_UNHOLD", "call.resumed")
        leg.send("CHANNEL_HANGUP_COMPLETE", "call.ended")
        if kind == "abandoned":  # nothing more comes: the settle window decides the miss
            leg.expected.append("call.missed")
    return Scenario(
        kind=kind, call_id=leg.call_id, messages=leg.messages, expected_types=leg.expected
    )


class _Leg:
    """Accumulates one leg's messages and the call.* types they should commit."""

    def __init__(self, rng: random.Random, group: str) -> None:
        self.rng, self.group = rng, group
        # FreeSWITCH channel uuids are UUIDv4; drawn from the seeded generator for repeatability.
        self.call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.number, self.name, self.talking_to = "", "", ""
        self.messages: list[Message] = []
        self.expected: list[str] = []

    def inbound(self, caller: str, name: str, *, answered: bool) -> None:
        """A caller parked in the console's queue and answered by FreeSWITCH while it waits.

        Then an operator takes the call (a bridge), or the caller gives up waiting.
        """
        self.number, self.name = caller, name
        self.send("CHANNEL_PARK", "call.initiated", topic=f"OC_{self.group}")
        self.send("CHANNEL_ANSWER", topic=f"OC_{self.group}")  # the queue, not a person
        if answered:
            self.talking_to = self.rng.choice(AGENTS)
            self.send("CHANNEL_BRIDGE", "call.answered")

    def outbound(self) -> None:
        """An operator's call out: ringing, then answered and bridged, or given up."""
        agent = self.rng.choice(AGENTS)
        self.number, self.name = agent, f"Operator {agent}"
        self.talking_to = "0" + "".join(self.rng.choices("0123456789", k=10))
        self.send("CHANNEL_PROGRESS", "call.initiated", "call.ringing")
        if self.rng.random() < 0.7:
            # The far end picking up answers the channel and FreeSWITCH bridges it at once.
            self.send("CHANNEL_ANSWER")
            self.send("CHANNEL_BRIDGE", "call.answered")
        self.send("CHANNEL_HANGUP_COMPLETE", "call.ended")

    def send(self, state: str, *expected: str, topic: str = STATE_UPDATE) -> None:
        """Publish ``state`` on ``topic`` (sometimes on both topics) expecting these types."""
        topics = [topic]
        repeats = state in ("CHANNEL_HOLD", "CHANNEL_UNHOLD")
        if not repeats and self.rng.random() < BOTH_TOPICS_RATIO:
            other = STATE_UPDATE if topic != STATE_UPDATE else f"OC_{self.group}"
            topics.append(other)
        for name in topics:
            body = {
                "uuid": self.call_id,
                "name": self.name,
                "number": self.number,
                "state": state,
                "topic": name,
                "subTopic": "",
                "talkingToNumber": self.talking_to,
            }
            self.messages.append(Message(f"/topic/{name}", body))
        self.expected.extend(expected)
