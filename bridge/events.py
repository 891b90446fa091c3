"""The normalised event: a CloudEvents 1.0 envelope, JSON structured mode (docs/events.md).

Events are immutable. A vendor normaliser builds them with :func:`make_event`; the writer gives
each new one its outbox ``seq`` at commit time, so only committed events carry a ``seq``.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

# Fixed namespace for the deterministic UUIDv5 ids: changing it would change every id and
# defeat deduplication of vendor retransmissions across upgrades. Never change it.
ID_NAMESPACE: Final = uuid.UUID("5b1f2c4e-8a3d-5e7f-9c1b-2d4e6f8a0b1c")
_NAMESPACE_BYTES: Final = ID_NAMESPACE.bytes

CALL_TYPES: Final = frozenset(
    {
        "call.initiated",
        "call.ringing",
        "call.ringing_ended",
        "call.answered",
        "call.held",
        "call.resumed",
        "call.transferred",
        "call.ended",
        "call.missed",
        "call.missed_revoked",
        "call.completed",
    }
)
TYPES: Final = CALL_TYPES | {
    "ivr.input",
    "extension.state",
    "agent.state",
    "pbx.health",
    "source.status",
    "command.requested",
    "command.succeeded",
    "command.failed",
    "raw.unmapped",
}
COMMAND_TYPES: Final = frozenset({"command.requested", "command.succeeded", "command.failed"})

DIRECTIONS: Final = ("inbound", "outbound", "internal")
DISPOSITIONS: Final = ("answered", "no_answer", "busy", "failed", "cancelled", "abandoned")
EXTENSION_STATES: Final = (
    "idle",
    "ringing",
    "in_call",
    "on_hold",
    "busy",
    "unavailable",
    "registered",
    "unknown",
)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One normalised event. Field order is the JSON key order."""

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    time: str
    subject: str
    seq: int | None = None
    vendor: str
    vendorevent: str
    datacontenttype: str = "application/json"
    data: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(body: bytes) -> Event:
    return _decoder.decode(body)


def event_id(source_name: str, *identity: object) -> str:
    """A UUIDv5 of the source name and the vendor's identity of the event.

    The same vendor event retransmitted yields the same id, so the outbox drops the copy.
    Equal to ``str(uuid.uuid5(ID_NAMESPACE, key))``, computed without building UUID objects:
    this runs for every event on the ingest path.
    """
    key = "\x1f".join([source_name, *(str(part) for part in identity)])
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def body_digest(body: bytes) -> str:
    """A stable identity for a payload with no usable ids of its own (``raw.unmapped``)."""
    return hashlib.sha256(body).hexdigest()


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; microseconds only when present."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: convert with the source's time zone first")
    utc = moment.astimezone(UTC)
    text = utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop unknown (``None``) and empty-string values: absent means unknown, never invented."""
    return {key: value for key, value in fields.items() if value is not None and value != ""}


def make_event(
    *,
    source_name: str,
    vendor: str,
    vendorevent: str,
    type: str,
    time: datetime,
    subject: str,
    identity: tuple[object, ...],
    data: dict[str, Any],
) -> Event:
    """Build an event; ``identity`` is the vendor's identity of it (see docs/events.md, ``id``)."""
    if type not in TYPES:
        raise ValueError(f"unknown event type {type!r}")
    return Event(
        id=event_id(source_name, type, *identity),
        source=f"/{vendor}/{source_name}",
        type=type,
        time=rfc3339(time),
        subject=subject,
        vendor=vendor,
        vendorevent=vendorevent,
        data=data,
    )


def type_matches(event_type: str, patterns: tuple[str, ...]) -> bool:
    """``call.*`` style filters; an empty tuple matches everything."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == event_type or pattern == "*":
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
