"""OnCall (PortSIP v16) REST API: a tenant login, click-to-call, extension states, call history.

The document's API: ``POST api/account/credentials/verify`` (1.1, the tenant token, its
``expires`` in seconds), then every request with that token "passed as a header" named
``access_token``; ``GET api/extensions/list`` (2.3), ``POST api/extensions/call`` (3.1) and
``GET api/call_logs/list`` (5.1). Refusals are HTTP 400 with ``{"err_code", "msg"}``; the
message is the vendor's and is passed on. Pure: no I/O, no clock (time is ``target.now``).

What the document does not settle, and what was chosen:

- Headers: every request says ``Content-Type: application/json`` (each section's header line),
  GETs and the query-string make-call included, though only the login has a body.
- The token refused: the document prints no code for it. HTTP 401, or a refusal whose message
  says the token is invalid or expired, is :class:`SessionExpired`.
- Make call (3.1) prints only a query string: ``src`` (the extension that rings first: the
  command's ``from``), ``to``, ``domain`` (the tenant's SIP domain, ``test01.oncall`` in the
  example and in the Event URL sample's ``sip:108@test01.oncall``), ``extension`` and ``auth``
  (an extension of the tenant and its web access password, which authenticate the call). Those
  three are settings of the source, not of a command (a password must never be stored with a
  command): ``[sources.api] domain``, ``call_extension``, ``call_password``. It also sends the
  tenant token, as every other request does. Its answer is not printed: any 2xx is success,
  and a ``session_id`` (or ``call_id``) in it is the call's id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from bridge.commands import actions
from bridge.commands.actions import CALLS_HISTORY, EXTENSION, EXTENSIONS_STATUS, ORIGINATE, PAGE
from bridge.commands.adapter import Adapter, join, json_body, with_query
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Session, Target
from bridge.errors import CommandInvalid, CommandRefused, PayloadError, SessionExpired
from bridge.events import Event
from bridge.vendors.base import SourceContext, local_time, text
from bridge.vendors.oncall_cdr import call_cdr

LOGIN_PATH: Final = "api/account/credentials/verify"
EXTENSIONS_PATH: Final = "api/extensions/list"
CALL_PATH: Final = "api/extensions/call"
CALL_LOGS_PATH: Final = "api/call_logs/list"
# 5.1's example asks pagesize=5; its answers elsewhere show the default, 100. A reconcile run
# reads every page, so the default's size keeps the requests few.
HISTORY_PAGE_SIZE: Final = 100
# The [sources.api] keys make-call needs (see the module docstring); read by name so the
# adapter works as soon as the config has them.
CALL_SETTINGS: Final = ("domain", "call_extension", "call_password")

ACTIONS: Final = actions.index(
    [
        # 3.1: src rings first, then to. to may be any number (the example's is a mobile).
        ORIGINATE,
        # 2.3 lists the extensions with a status; 2.4 (show) has no status, and takes the
        # PBX's internal id, not the number: one extension is found in the list. The list is
        # paged (pagination is required), so the page is an argument too.
        EXTENSIONS_STATUS.taking(EXTENSION, PAGE),
        CALLS_HISTORY,
    ]
)

_JSON: Final = (("Content-Type", "application/json"),)


def login(target: Target) -> HttpRequest:
    """1.1: the tenant user's name and password, for a tenant token."""
    api = target.api
    body = {"name": api.username or "", "password": api.password or ""}
    return HttpRequest(
        method="POST", url=join(api.url, LOGIN_PATH), headers=_JSON, body=json_body(body)
    )


def logged_in(answer: HttpAnswer, now: float) -> Session:
    """The token of a login answer, valid ``expires`` seconds from ``now``."""
    decoded = _decode(answer)
    if not (200 <= answer.status < 300) or not isinstance(decoded, dict):
        # A refused login is a refusal (wrong name or password), never an expired session:
        # the driver must not log in again and again.
        raise _refusal(answer, decoded, expired=False)
    token, expires = decoded.get("access_token"), decoded.get("expires")
    if not isinstance(token, str) or not token:
        raise CommandRefused("the PBX's login answer has no access_token", status=answer.status)
    if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0:
        raise CommandRefused(
            f"the PBX's login answer has no usable expires: {expires!r}", status=answer.status
        )
    return Session(token=token, expires_at=now + float(expires))


def build(command: Command, target: Target) -> HttpRequest:
    api = target.api
    args = command.args
    headers = (("access_token", target.session.token if target.session else ""), *_JSON)
    if command.action == ORIGINATE.name:
        domain, extension, auth = (_setting(target, key) for key in CALL_SETTINGS)
        params = [
            ("src", args["from"]),
            ("to", args["to"]),
            ("domain", domain),
            ("extension", extension),
            ("auth", auth),
        ]
        url = with_query(join(api.url, CALL_PATH), params)
        return HttpRequest(method="POST", url=url, headers=headers)
    if command.action == EXTENSIONS_STATUS.name:
        url = with_query(join(api.url, EXTENSIONS_PATH), [("pagination", str(args.get("page", 1)))])
        return HttpRequest(method="GET", url=url, headers=headers)
    if command.action == CALLS_HISTORY.name:
        params = [("pagination", str(args.get("page", 1))), ("pagesize", str(HISTORY_PAGE_SIZE))]
        # 5.1: end_time is to be used "if start_time is used"; the format is not given, so it
        # is the records' own (PBX-local YYYY-MM-DD HH:MM:SS).
        if "since" in args:
            params.append(("start_time", _local(args["since"], target, "since")))
        elif "until" in args:
            raise CommandInvalid("args.until", "OnCall filters by end time only with since")
        if "until" in args:
            params.append(("end_time", _local(args["until"], target, "until")))
        url = with_query(join(api.url, CALL_LOGS_PATH), params)
        return HttpRequest(method="GET", url=url, headers=headers)
    raise CommandInvalid("action", f"oncall does not support {command.action}")


def _setting(target: Target, key: str) -> str:
    value = getattr(target.api, key, None)
    if not isinstance(value, str) or not value:
        raise CommandInvalid(
            f"sources.api.{key}",
            f"OnCall's make call needs [sources.api] {', '.join(CALL_SETTINGS)}",
        )
    return value


def _local(value: object, target: Target, name: str) -> str:
    """An RFC 3339 time or epoch seconds as the PBX's local ``YYYY-MM-DD HH:MM:SS``."""
    text = str(value).strip()
    try:
        if text.replace(".", "", 1).isdigit():
            moment = datetime.fromtimestamp(float(text), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise CommandInvalid(
            f"args.{name}", f"expected an RFC 3339 time or epoch seconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise CommandInvalid(f"args.{name}", f"a time needs its offset (Z or +07:00): {text!r}")
    return moment.astimezone(target.source.tz).strftime("%Y-%m-%d %H:%M:%S")


# -- answers ---------------------------------------------------------------------------------

_json = msgspec.json.Decoder()
# A message saying the token is what was refused (the document prints no code for it).
_TOKEN_REFUSED: Final = re.compile(
    r"token.*(invalid|expired|incorrect)|(invalid|expired).*token", re.I
)
# A token echoed in a message (32 hex digits in the document) must not reach a Result.
_TOKEN_LIKE: Final = re.compile(r"\b[0-9a-fA-F]{24,}\b")


def parse(command: Command, answer: HttpAnswer) -> Result:
    decoded = _decode(answer)
    if not (200 <= answer.status < 300) or (isinstance(decoded, dict) and "err_code" in decoded):
        raise _refusal(answer, decoded, expired=True)
    if command.action == ORIGINATE.name:
        return Result(data={"call_id": _call_id(decoded)}, message=_message(decoded))
    if not isinstance(decoded, dict):
        raise CommandRefused(
            f"the PBX answered HTTP {answer.status} with no JSON object", status=answer.status
        )
    if command.action == EXTENSIONS_STATUS.name:
        return Result(data=_extensions(command, decoded))
    return Result(data=_history(decoded))


def _decode(answer: HttpAnswer) -> Any:
    try:
        return _json.decode(answer.body) if answer.body.strip() else None
    except msgspec.DecodeError:
        return None


def _refusal(answer: HttpAnswer, decoded: Any, *, expired: bool) -> CommandRefused:
    """The vendor's ``msg`` and ``err_code``; SessionExpired for a refused token."""
    message = _message(decoded)
    code = decoded.get("err_code") if isinstance(decoded, dict) else None
    vendor_code = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
    if message is None:
        excerpt = _TOKEN_LIKE.sub("[redacted]", answer.text.strip()[:200])
        message = f"the PBX refused (HTTP {answer.status}): {excerpt!r}"
    if expired and (answer.status == 401 or _TOKEN_REFUSED.search(message)):
        return SessionExpired(message, vendor_code=vendor_code, status=answer.status)
    return CommandRefused(message, vendor_code=vendor_code, status=answer.status)


def _message(decoded: Any) -> str | None:
    value = decoded.get("msg") if isinstance(decoded, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    return _TOKEN_LIKE.sub("[redacted]", value.strip())


def _call_id(decoded: Any) -> str | None:
    if not isinstance(decoded, dict):
        return None
    for key in ("session_id", "call_id"):
        value = decoded.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


# 2.3's status (only OFFLINE is printed) -> extensions.status's state. PortSIP's other values
# are not documented; the ones a PBX plausibly sends are mapped, the rest are "unknown".
_STATES: Final = {
    "offline": "unavailable",
    "unregistered": "unavailable",
    "online": "registered",
    "registered": "registered",
    "available": "idle",
    "idle": "idle",
    "ringing": "ringing",
    "oncall": "in_call",
    "talking": "in_call",
    "incall": "in_call",
    "busy": "busy",
    "dnd": "busy",
    "hold": "on_hold",
    "onhold": "on_hold",
}


def _extensions(command: Command, decoded: Mapping[str, Any]) -> dict[str, Any]:
    wanted = command.args.get("extension")
    listed = decoded.get("extensions")
    rows: list[Any] = listed if isinstance(listed, list) else []
    found: list[dict[str, Any]] = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        number = row.get("extension_number")
        if not isinstance(number, str | int) or isinstance(number, bool):
            continue
        if wanted is not None and str(number) != wanted:
            continue
        status = row.get("status")
        vendor_state = status if isinstance(status, str) else None
        key = (vendor_state or "").replace(" ", "").replace("_", "").lower()
        found.append(
            {"extension": str(number), "state": _STATES.get(key, "unknown"), "vendor_state": status}
        )
    data: dict[str, Any] = {"extensions": found}
    following = _next_page(decoded, command.args.get("page", 1), len(rows))
    if following is not None:
        data["next_page"] = following
    return data


def _history(decoded: Mapping[str, Any]) -> dict[str, Any]:
    rows = decoded.get("details")
    records = [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
    page = decoded.get("pagination")
    size = decoded.get("pagesize")
    page = page if isinstance(page, int) and not isinstance(page, bool) else 1
    size = size if isinstance(size, int) and not isinstance(size, bool) else HISTORY_PAGE_SIZE
    # 5.1 answers no total: a full page may have a next one, a short page is the last.
    following = page + 1 if records and len(records) >= size else None
    return {"records": records, "next_page": following}


def _next_page(decoded: Mapping[str, Any], page: object, rows: int) -> int | None:
    """2.3 answers ``count`` (all the records) and ``pagesize``: is there a page after this?"""
    count, size = decoded.get("count"), decoded.get("pagesize")
    if not isinstance(page, int) or not isinstance(count, int) or not isinstance(size, int):
        return None
    return page + 1 if rows and size > 0 and page * size < count else None


# -- history: call-log records to the events of their CDR ------------------------------------
#
# A record (5.1's details[]) and the CDR URL's call_cdr push describe the same call with
# different names and time formats: a record is renamed into the push's shape and the CDR
# normaliser runs on it, so a call whose CDR already arrived makes the same call.completed
# (same id), which the outbox drops, and a call whose CDR never arrived is added. The CDR
# event's id is made of the call key (session_id, else the SIP call_id), the cdr_id, the
# ended_time (epoch seconds) and the call_status. A record carries them as session_id, id
# (PortSIP's REST CDR id, "The unique ID of CDR": the cdr_id of its call_start and CDR pushes),
# end_time (PBX-local YYYY-MM-DD HH:MM:SS) and status (FAIL, ANSWERED, ...). The call's
# identity is its session_id, as for every push of the call.

# The record's status (upper case, REST enum style) -> the CDR push's call_status. The document
# prints FAIL (5.1) and ANSWERED (5.2, a target); the CDR URL sends answered|noanswer|fail.
_STATUSES: Final = {
    "answered": "answered",
    "answer": "answered",
    "noanswer": "noanswer",
    "no_answer": "noanswer",
    "not_answer": "noanswer",
    "not_answered": "noanswer",
    "missed": "noanswer",
    "fail": "fail",
    "failed": "fail",
}
# What a record writes for "never": answer_time "NOT_ANSWER" (5.1's sample), and epoch 0 in the
# PBX's zone for ringing_time ("1970-01-01 08:00:00": Asia/Ho_Chi_Minh was UTC+8 in 1970).
_NEVER: Final = frozenset({"", "not_answer", "not_answered", "none", "null"})
# A record's end_reason "NONE" is no reason; the CDR normaliser drops its own spelling, "None".
_NO_REASON: Final = frozenset({"none", ""})


def history_events(records: Sequence[Mapping[str, Any]], ctx: SourceContext) -> list[Event]:
    """The ``call.completed`` each record's CDR push makes (same id), ``raw`` the record.

    A record that cannot be read raises :class:`PayloadError` naming ``records[i].field``: a
    reconcile run that skipped it would report the call as checked when it was not.
    """
    events: list[Event] = []
    for index, record in enumerate(records):
        try:
            push = cdr_push(record, ctx)
            made = call_cdr(push, ctx, "call_cdr")
        except PayloadError as exc:
            where = f"records[{index}]" + (f".{exc.field}" if exc.field else "")
            raise PayloadError(where, exc.problem) from None
        raw = dict(record)
        events += [msgspec.structs.replace(e, data={**e.data, "raw": raw}) for e in made]
    return events


def cdr_push(record: Mapping[str, Any], ctx: SourceContext) -> dict[str, Any]:
    """A call-log record in the CDR URL's ``call_cdr`` shape (the fields both have)."""
    if not isinstance(record, Mapping):
        raise PayloadError("", f"expected an object, got {type(record).__name__}")
    status = (text(record, "status") or "").lower()
    reason = text(record, "end_reason")
    push: dict[str, Any] = {
        "event_type": "call_cdr",
        "session_id": text(record, "session_id"),
        "call_id": text(record, "call_id"),
        "cdr_id": text(record, "id"),
        "caller": text(record, "caller"),
        "callee": text(record, "callee"),
        "direction": text(record, "direction"),
        "start_time": _epoch(record, "start_time", ctx),
        "ring_time": _epoch(record, "ringing_time", ctx),
        "answered_time": _epoch(record, "answer_time", ctx),
        "ended_time": _epoch(record, "end_time", ctx),
        "call_status": _STATUSES.get(status, status or None),
        "ring_duration": text(record, "ring_duration"),
        "talk_duration": text(record, "talk_duration") or text(record, "duration"),
        "ended_reason": reason.lower() if reason and reason.lower() not in _NO_REASON else None,
        "did": text(record, "didcid"),
        "outbound_caller_id": text(record, "outcid"),
    }
    return {key: value for key, value in push.items() if value is not None}


def _epoch(record: Mapping[str, Any], key: str, ctx: SourceContext) -> str | None:
    """A record's PBX-local time as the CDR push writes it: epoch seconds, "0" for never."""
    value = text(record, key)
    if value is None:
        return None
    if value.lower() in _NEVER:
        return "0"
    if value.isdigit():  # already epoch seconds
        return value
    moment = local_time(record, key, ctx.tz)
    if moment is None or moment < _NOT_BEFORE:
        return "0"
    return str(int(moment.timestamp()))


# Any time before this is a zone's rendering of epoch 0 ("never"), not a call.
_NOT_BEFORE: Final = datetime(1970, 1, 3, tzinfo=UTC)


ADAPTER: Final = Adapter(
    vendor="oncall",
    actions=ACTIONS,
    build=build,
    parse=parse,
    login=login,
    logged_in=logged_in,
    history_events=history_events,
)
