"""What every vendor module provides, and the small helpers they share.

A normaliser is a pure function: (payload, source context) -> events. No I/O, no clock: the
receipt time comes in through the context, so tests feed the documents' samples and compare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

import msgspec

from bridge.config import SourceConfig
from bridge.errors import PayloadError, UnsupportedMediaError
from bridge.events import Event, body_digest, compact, make_event, rfc3339


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """A vendor request as received: the body bytes, the query string, the path tail."""

    body: bytes = b""
    query: Mapping[str, str] = msgspec.field(default_factory=dict)
    content_type: str = ""
    path: str = ""


class SourceContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a normaliser may know about the source that received a payload."""

    name: str
    vendor: str
    tz: tzinfo
    received_at: datetime
    extension_max_digits: int = 5
    dids: frozenset[str] = frozenset()
    trunk_hosts: frozenset[str] = frozenset()
    recording_base_url: str | None = None


def context_template(source: SourceConfig, vendor: str) -> SourceContext:
    """A source's context, once: each payload's is ``at(template, received_at)``."""
    return SourceContext(
        name=source.name,
        vendor=vendor,
        tz=source.tz,
        received_at=datetime.fromtimestamp(0, UTC),
        extension_max_digits=source.extension_max_digits,
        dids=frozenset(source.dids),
        trunk_hosts=frozenset(host.lower() for host in source.trunk_hosts),
        recording_base_url=source.recording_base_url,
    )


def at(template: SourceContext, received_at: datetime) -> SourceContext:
    return msgspec.structs.replace(template, received_at=received_at)


Normalizer = Callable[[Payload, SourceContext], list[Event]]


@dataclass(frozen=True, kw_only=True)
class Ack:
    """The 2xx answer a vendor expects once its events are committed."""

    content_type: str
    body: bytes
    status: int = 200


@dataclass(frozen=True, kw_only=True)
class Vendor:
    """A vendor: its name, how payloads become events, what it expects back.

    ``reject`` shapes the 400 answer for a payload that cannot be read, for vendors that expect
    something other than the bridge's JSON error (a plain-text "failure", say); ``None`` keeps
    the JSON error ``{"error", "detail", "field"}``.
    """

    name: str
    normalize: Normalizer
    ack: Ack
    reject: Callable[[PayloadError], Ack] | None = None


_json = msgspec.json.Decoder()


def parse_json_object(payload: Payload) -> dict[str, Any]:
    """The body as a JSON object, or a :class:`PayloadError` saying why not."""
    if not payload.body.strip():
        raise PayloadError("", "empty body: expected a JSON object")
    try:
        value = _json.decode(payload.body)
    except msgspec.DecodeError as exc:
        raise UnsupportedMediaError("", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec gives up around a thousand levels deep: no vendor nests like that.
        raise UnsupportedMediaError("", "body is JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise PayloadError("", f"expected a JSON object, got {type(value).__name__}")
    return value


def text(obj: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field, stripped; numbers are accepted as their text (vendors mix them)."""
    value = obj.get(key)
    if type(value) is str:  # the common case first: this runs for every field of every push
        stripped = value.strip()
        if stripped:
            return stripped
        if required:
            raise PayloadError(key, "missing" if not value else "empty")
        return None
    if value is None:
        if required:
            raise PayloadError(key, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(key, f"expected a string, got {type(value).__name__}")
    result = str(value).strip()
    if not result and required:
        raise PayloadError(key, "empty")
    return result or None


def epoch(obj: Mapping[str, Any], key: str, *, required: bool = False) -> datetime | None:
    """Epoch seconds (number or numeric string, fractions allowed) as an aware UTC datetime."""
    raw = text(obj, key, required=required)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise PayloadError(key, f"expected epoch seconds, got {raw!r}") from None
    if not 0 <= seconds < 32503680000:  # before the year 3000: rejects garbage and overflow
        raise PayloadError(key, f"epoch seconds out of range: {raw!r}")
    return datetime.fromtimestamp(seconds, UTC)


def local_time(
    obj: Mapping[str, Any], key: str, tz: tzinfo, *, required: bool = False
) -> datetime | None:
    """A naive ``YYYY-MM-DD HH:MM:SS`` PBX-local time, made aware with the source's zone."""
    raw = text(obj, key, required=required)
    if raw is None or raw.startswith("0000-00-00"):  # Asterisk's "never" (e.g. no answer)
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadError(key, f"expected 'YYYY-MM-DD HH:MM:SS', got {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999: the zone offset pushes it out of range
        raise PayloadError(key, f"time out of range: {raw!r}") from None


def seconds(obj: Mapping[str, Any], key: str) -> int | None:
    """A whole number of seconds (``"12"``, ``12``, ``"12.0"``, ``"0:00:12"``)."""
    raw = text(obj, key)
    if raw is None:
        return None
    try:
        if ":" in raw:
            parts = [int(part) for part in raw.split(":")]
            if len(parts) > 3 or any(part < 0 for part in parts):
                raise ValueError(raw)
            total = 0
            for part in parts:
                total = total * 60 + part
            return total
        value = float(raw)
    except ValueError:
        raise PayloadError(key, f"expected seconds, got {raw!r}") from None
    if not 0 <= value < 10**9:
        raise PayloadError(key, f"seconds out of range: {raw!r}")
    return int(value)


def span_s(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None or end < start:
        return None
    return int((end - start) / timedelta(seconds=1))


def _request_key(payload: Payload) -> bytes:
    """The bytes that make one request distinct: body, path and (sorted) query string."""
    query = "&".join(f"{key}={value}" for key, value in sorted(payload.query.items()))
    return b"\x1f".join([payload.body, payload.path.encode(), query.encode()])


def unmapped(payload: Payload, ctx: SourceContext, raw: Any, vendorevent: str) -> Event:
    """A well-formed payload the bridge has no mapping for: kept as ``raw.unmapped``."""
    return make_event(
        source_name=ctx.name,
        vendor=ctx.vendor,
        vendorevent=vendorevent,
        type="raw.unmapped",
        time=ctx.received_at,
        subject="pbx",
        identity=(body_digest(_request_key(payload)),),
        data=compact({"raw": raw, "path": payload.path or None}),
    )


class Fields(dict[str, Any]):
    """The payload with keys looked up case-insensitively.

    ``ivr`` and ``cc_cdr`` use camelCase, the other events lower case, and firmware versions
    differ; errors still name the key as the caller spelt it (the documented spelling).
    A dict with lower-cased keys and a ``get`` that lower-cases the key: lookups stay in C,
    and a missing optional field costs no KeyError (this runs for every push).
    """

    def __init__(self, obj: Mapping[str, Any]) -> None:
        super().__init__((key.lower(), value) for key, value in obj.items())

    def __getitem__(self, key: str) -> Any:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


def timings(**values: datetime | int | None) -> dict[str, str | int] | None:
    """The known timings (times as RFC 3339), or None when none is known."""
    known = {
        key: rfc3339(value) if isinstance(value, datetime) else value
        for key, value in values.items()
        if value is not None
    }
    return known or None


def vendor_event(
    ctx: SourceContext,
    vendorevent: str,
    type_: str,
    time: datetime,
    subject: str,
    identity: tuple[object, ...],
    data: dict[str, Any],
    raw: Any,
) -> Event:
    """An event of this source, with ``raw`` (the payload as received) beside its fields."""
    return make_event(
        source_name=ctx.name,
        vendor=ctx.vendor,
        vendorevent=vendorevent,
        type=type_,
        time=time,
        subject=subject,
        identity=identity,
        data=compact({**data, "raw": raw}),
    )


def required(fields: Mapping[str, Any], key: str) -> str:
    """A string field that must be there (the error names ``key``)."""
    value = text(fields, key, required=True)
    if value is None:  # text() raises first; this narrows the type
        raise PayloadError(key, "missing")
    return value


# More than this after receipt cannot be when it happened (typo'd samples, wrong PBX clocks).
BELIEVABLE_AHEAD: Final = timedelta(days=1)


def believable(moment: datetime | None, ctx: SourceContext) -> datetime:
    """The vendor time, or the receipt time when there is none or it cannot be true.

    A PBX with a wrong clock is no reason to refuse its push (it would only retransmit it):
    the event takes the receipt time and the vendor's value stays in ``raw``.
    """
    if moment is None or moment - ctx.received_at > BELIEVABLE_AHEAD:
        return ctx.received_at
    return moment


def recording(ctx: SourceContext, path: str | None) -> dict[str, str | None]:
    """A recording the PBX names by a path: a fetchable URL when the source knows the base.

    A PBX-relative path is no URL a CRM can open; without ``recording_base_url`` only the path
    is given (``recording_path``), and an absolute URL from the PBX is kept as it is.
    """
    if path is None:
        return {}
    if path.startswith(("http://", "https://")):
        return {"recording_url": path}
    base = ctx.recording_base_url
    url = f"{base.rstrip('/')}/{path.lstrip('/')}" if base else None
    return {"recording_url": url, "recording_path": path}


def side(number: str | None, host: str | None, ctx: SourceContext) -> str | None:
    """Which end of a call a party is: ``extension``, ``external``, ``did`` or None (unknown).

    In order of trust: a host the source lists as a trunk is external; a number it lists as
    one of its DIDs is the PBX's own public number; a number longer than an extension (or
    with a ``+``) is external, a short one an extension. A name ("anonymous") proves nothing.
    """
    if host is not None and host.lower() in ctx.trunk_hosts:
        return "external"
    if number is None:
        return None
    if number in ctx.dids:
        return "did"
    digits = number.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        return None
    if number.startswith("+") or len(digits) > ctx.extension_max_digits:
        return "external"
    return "extension"


_DIRECTION_OF: Final = {
    ("external", "extension"): "inbound",
    ("external", "did"): "inbound",
    ("extension", "external"): "outbound",
    ("extension", "extension"): "internal",
}


def infer_direction(caller: str | None, callee: str | None) -> str | None:
    """A call's direction from the sides of its two parties (see :func:`side`), if they tell.

    A call to one of the PBX's own DIDs comes from outside unless an extension placed it (an
    anonymous caller included). A call from outside to an outside number (a forward) or with an
    end unknown: None.
    """
    if callee == "did" and caller != "extension":
        return "inbound"
    if caller is None or callee is None:
        return None
    return _DIRECTION_OF.get((caller, callee))
