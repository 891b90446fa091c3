"""Zycoo CooCenter: commands to its passive HTTP API (``<api.url>/coocenter-api/...``).

Paths, parameter names and answers are those of Zycoo's own API book
(OpenVoIP/coocenter-api-gitbook, ``bei-dong-cha-xun/*.md``), which repairs the OCR'd manual.
Every command is a POST with a form body (``application/x-www-form-urlencoded``), its fields in
the order of the book's curl examples; the queries have no body. When ``api.webkey`` is set,
``Authorization`` is ``md5(WEBKEY + 'YYYY-MM-DD')`` for the date at the PBX (the source's
timezone at ``target.now``), as on the pushes.

Answers are ``{"status": "success"|"error", "message": ..., "data": ...}``; the agent-status
list is a bare JSON array. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode

import msgspec

from bridge.commands import actions
from bridge.commands.actions import (
    AGENT,
    AGENT_LOGIN,
    AGENT_LOGOUT,
    AGENT_PAUSE,
    AGENT_UNPAUSE,
    CALLS_ACTIVE,
    EXTENSION,
    EXTENSIONS_STATUS,
    HANGUP,
    ORIGINATE,
    QUEUE,
    TO,
    TO_KIND,
    TRANSFER,
)
from bridge.commands.adapter import Adapter, join, unreadable
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.errors import CommandRefused
from bridge.sources.auth import webkey_for
from bridge.vendors.coocenter import extension_state

# The book: "将指定分机的通话转接到另外的分机" (transfer an extension's call to another
# extension). Nothing says a number or a queue is taken, so only an extension is offered.
TRANSFER_TO_KIND: Final = replace(TO_KIND, choices=("extension",), default="extension")

ACTIONS: Final = actions.index(
    [
        ORIGINATE,  # click-number: src rings first, then dst ("first dials the calling number")
        HANGUP.taking(EXTENSION.need()),  # hangup takes an extension, not a call id
        TRANSFER.taking(EXTENSION.need(), TO.need(), TRANSFER_TO_KIND),
        # An agent is an extension in a queue: agent-login/agent-logout take both.
        AGENT_LOGIN.taking(AGENT.need(), QUEUE.need()),
        # The book marks agent-logout's queue optional (required=false): without one, the
        # extension leaves every queue.
        AGENT_LOGOUT.taking(AGENT.need(), QUEUE),
        # agent-pause takes queue, member, state=on|off and no reason, so none is accepted.
        AGENT_PAUSE.taking(AGENT.need(), QUEUE.need()),
        AGENT_UNPAUSE.taking(AGENT.need(), QUEUE.need()),
        CALLS_ACTIVE,
        EXTENSIONS_STATUS.taking(EXTENSION),
    ]
)

PREFIX: Final = "coocenter-api"
# catalogue action -> (method, path under /coocenter-api/)
PATHS: Final = {
    ORIGINATE.name: ("POST", "extensions/click-number"),
    HANGUP.name: ("POST", "extensions/hangup"),
    TRANSFER.name: ("POST", "extensions/transfer"),
    AGENT_LOGIN.name: ("POST", "queues/agent-login"),
    AGENT_LOGOUT.name: ("POST", "queues/agent-logout"),
    # The book's heading says GET, but its curl examples (and the OCR copy's) POST a form body:
    # the examples are what was run.
    AGENT_PAUSE.name: ("POST", "queues/agent-pause"),
    AGENT_UNPAUSE.name: ("POST", "queues/agent-pause"),
    # current-calls: the heading says GET, both curl examples (book and OCR line 200) POST.
    CALLS_ACTIVE.name: ("POST", "extensions/current-calls"),
    # extension-hints-status: GET in the heading and in both curl examples.
    EXTENSIONS_STATUS.name: ("GET", "extensions/extension-hints-status"),
}
FORM: Final = "application/x-www-form-urlencoded"


def build(command: Command, target: Target) -> HttpRequest:
    api = target.api
    method, path = PATHS[command.action]
    headers = [("accept", "application/json")]  # the curl examples' header, as spelt there
    fields = _fields(command)
    if fields is not None:
        headers.append(("Content-Type", FORM))
    if api.webkey is not None:
        # The header the manual names ("the Authorization in the request header"); the book's
        # parameter tables say "Authentication", their template's placeholder text.
        headers.append(("Authorization", authorization(api.webkey, target)))
    body = urlencode(fields).encode() if fields is not None else b""
    return HttpRequest(
        method=method, url=join(api.url, f"{PREFIX}/{path}"), headers=tuple(headers), body=body
    )


def authorization(webkey: str, target: Target) -> str:
    """``md5(WEBKEY + date)``: the date is the PBX's, in the source's zone at ``target.now``."""
    day = datetime.fromtimestamp(target.now, target.source.tz).date()
    return webkey_for(webkey, day.isoformat())


def _fields(command: Command) -> list[tuple[str, str]] | None:
    """The form fields in the book's curl order; ``None`` for a request with no body."""
    args = command.args
    action = command.action
    if action == ORIGINATE.name:
        return [("src", args["from"]), ("dst", args["to"])]  # "src=808&dst=809"
    if action == HANGUP.name:
        return [("extension", args["extension"])]  # "extension=801"
    if action == TRANSFER.name:
        # "Call transfer 802 to 801": -d "dst=801&src=802"
        return [("dst", args["to"]), ("src", args["extension"])]
    if action in (AGENT_LOGIN.name, AGENT_LOGOUT.name):
        fields = [("extension", args["agent"])]  # "extension=800&queue=630"
        if args.get("queue") is not None:
            fields.append(("queue", args["queue"]))
        return fields
    if action in (AGENT_PAUSE.name, AGENT_UNPAUSE.name):
        # "queue=630&member=808&state=on"; "off" ends the pause.
        state = "on" if action == AGENT_PAUSE.name else "off"
        return [("queue", args["queue"]), ("member", args["agent"]), ("state", state)]
    return None


# -- answers ---------------------------------------------------------------------------------

_json = msgspec.json.Decoder()
# The Authorization value is an md5 hex digest: a PBX that echoes it must not carry it on.
_DIGEST: Final = re.compile(r"\b[0-9a-fA-F]{32}\b")


def parse(command: Command, answer: HttpAnswer) -> Result:
    decoded = _decoded(answer)
    if isinstance(decoded, list):  # extension-hints-status: the book's answer is a bare array
        return Result(data=_READERS.get(command.action, _nothing)(command, decoded))
    data = decoded.get("data")
    reader = _READERS.get(command.action, _nothing)
    return Result(data=reader(command, data), message=_message(decoded))


def _decoded(answer: HttpAnswer) -> dict[str, Any] | list[Any]:
    """The answer's JSON if it says success, else :class:`CommandRefused` with its message.

    A 401 (a wrong WEBKEY) is a refusal like any other: there is no login to renew, so it is
    not :class:`bridge.errors.SessionExpired`.
    """
    try:
        decoded = _json.decode(answer.body)
    except msgspec.DecodeError:
        decoded = None
    ok_status = 200 <= answer.status < 300
    if isinstance(decoded, list) and ok_status:
        return decoded
    if not isinstance(decoded, dict):
        raise unreadable(answer, _redact(answer.text.strip())[:200])
    status = decoded.get("status")
    if ok_status and isinstance(status, str) and status.strip().lower() == "success":
        return decoded
    code = status.strip() if isinstance(status, str) and status.strip() else None
    raise CommandRefused(
        _message(decoded) or f"the PBX refused (HTTP {answer.status}, status {status!r})",
        vendor_code=code,
        status=answer.status,
    )


def _message(wrapper: Mapping[str, Any]) -> str | None:
    value = wrapper.get("message")
    if not isinstance(value, str) or not value.strip():
        return None
    return _redact(value.strip())


def _redact(text: str) -> str:
    return _DIGEST.sub("[redacted]", text)


def _nothing(command: Command, data: Any) -> dict[str, Any]:
    return {}


def _originated(command: Command, data: Any) -> dict[str, Any]:
    """The call's id when the PBX gives one. The book prints no click-number answer; Asterisk's
    originate learns the first channel's Uniqueid (the pushes' ``uniqueid``), which the
    simulator answers as ``data.uniqueid``."""
    fields = _lower(data) if isinstance(data, dict) else {}
    return {"call_id": _text(fields.get("linkedid")) or _text(fields.get("uniqueid"))}


# Asterisk channel states (channelstatedesc, or the channelstate number) -> the call's state.
_RINGING: Final = frozenset({"ring", "ringing", "dialing", "dialing offhook", "pre-ring"})
_STATE_DESCS: Final = {
    "0": "down",
    "1": "rsrvd",
    "2": "offhook",
    "3": "dialing",
    "4": "ring",
    "5": "ringing",
    "6": "up",
    "7": "busy",
    "8": "dialing offhook",
    "9": "pre-ring",
}
# A channel named after a short number is an extension's phone (SIP/896-0000000b); a trunk is
# named after its peer (SIP/trunk1-...) or a long number. 5 is extension_max_digits' default.
_EXTENSION_MAX_DIGITS: Final = 5


def _active_calls(command: Command, data: Any) -> dict[str, Any]:
    """current-calls lists channels: one call per Asterisk ``linkedid`` (or ``uniqueid``).

    The book's sample row is cut short (it ends in a dangling comma) and shows neither id; an
    Asterisk channel list (``Channels will follow`` is AMI CoreShowChannels' reply) carries
    both. The pushes key a call by the ``uniqueid`` of its first channel, which is every
    channel's ``linkedid`` (a transfer's new channel keeps it). A channel with neither id
    cannot be matched to any call the bridge holds, and gap repair ends every held call missing
    from the list: so such an answer is refused rather than reported short.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    if isinstance(data, list) and not all(isinstance(row, dict) for row in data):
        raise CommandRefused("the PBX listed a channel that is not an object")
    for row in _rows(data):
        fields = _lower(row)
        key = _text(fields.get("linkedid")) or _text(fields.get("uniqueid"))
        if key is None:
            raise CommandRefused(
                "the PBX listed a channel without uniqueid or linkedid "
                f"({_text(fields.get('channel')) or 'unnamed'}): its calls cannot be matched"
            )
        groups.setdefault(key, []).append(fields)
    return {"calls": [_call(key, channels) for key, channels in groups.items()]}


def _call(call_id: str, channels: list[dict[str, Any]]) -> dict[str, Any]:
    # The first channel (uniqueid == the call's key) is the caller's side.
    first = next((c for c in channels if _text(c.get("uniqueid")) == call_id), channels[0])
    states = [_channel_state(c) for c in channels]
    if any(state in _RINGING for state in states):
        state = "ringing"
    elif states and all(state == "up" for state in states):
        state = "active"
    else:
        state = _channel_state(first) or "unknown"
    ordered = [first, *(c for c in channels if c is not first)]
    peers = (_peer(_text(c.get("channel"))) for c in ordered)
    extension = next((p for p in peers if p is not None), None)
    return {
        "call_id": call_id,
        "from": _text(first.get("calleridnum")),
        "to": _text(first.get("connectedlinenum")),
        "extension": extension,
        "state": state,
        "vendor_state": _text(first.get("channelstatedesc")),
        "channels": [_text(c.get("channel")) for c in channels],
        "duration_s": _duration_s(_text(first.get("duration"))),
    }


def _channel_state(fields: Mapping[str, Any]) -> str | None:
    desc = _text(fields.get("channelstatedesc"))
    if desc is not None:
        return desc.lower()
    return _STATE_DESCS.get(_text(fields.get("channelstate")) or "")


def _peer(channel: str | None) -> str | None:
    """The extension an Asterisk channel belongs to (``SIP/896-0000000b`` -> 896), if any."""
    if channel is None:
        return None
    _, _, rest = channel.partition("/")
    resource = rest.rpartition("-")[0] or rest  # drop the per-channel suffix
    if resource.isdigit() and len(resource) <= _EXTENSION_MAX_DIGITS:
        return resource
    return None


def _duration_s(value: str | None) -> int | None:
    """``00:02:58`` -> 178."""
    if value is None or not re.fullmatch(r"\d+(:\d{1,2}){0,2}", value):
        return None
    total = 0
    for part in value.split(":"):
        total = total * 60 + int(part)
    return total


# Asterisk's extension-state words (ast_extension_state2str), for firmware that sends the text
# the OCR copy shows ("status": "Idle") instead of the book's bit set ("status": "0").
_STATE_WORDS: Final = {
    "idle": "idle",
    "inuse": "in_call",
    "busy": "busy",
    "unavailable": "unavailable",
    "ringing": "ringing",
    "inuse&ringing": "ringing",
    "hold": "on_hold",
    "onhold": "on_hold",
    "inuse&hold": "on_hold",
}


def _extensions(command: Command, data: Any) -> dict[str, Any]:
    wanted = command.args.get("extension")
    out = []
    for row in _rows(data):
        fields = _lower(row)
        extension = _text(fields.get("extension"))
        if extension is None or (wanted is not None and extension != wanted):
            continue
        vendor_state = _text(fields.get("status"))
        out.append(
            {"extension": extension, "state": _state(vendor_state), "vendor_state": vendor_state}
        )
    return {"extensions": out}


def _state(value: str | None) -> str:
    """The book's status codes are the pushes' bit set (0 idle, 1 in use, 2 busy, 4 offline,
    8 ringing, 16 hold): read with the push normaliser's own rule, so both agree."""
    if value is None:
        return "unknown"
    if re.fullmatch(r"-?\d+", value):
        return extension_state(int(value))[0]
    return _STATE_WORDS.get(value.replace(" ", "").lower(), "unknown")


def _rows(data: Any) -> list[Mapping[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise CommandRefused(f"the PBX answered a {type(data).__name__} where a list belongs")
    return [row for row in data if isinstance(row, dict)]


def _lower(row: Mapping[str, Any]) -> dict[str, Any]:
    # The book's channel keys are lower case; its peer list capitalises (Exten, Status).
    return {str(key).lower(): value for key, value in row.items()}


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value).strip() or None


_READERS: Final[dict[str, Callable[[Command, Any], dict[str, Any]]]] = {
    ORIGINATE.name: _originated,
    CALLS_ACTIVE.name: _active_calls,
    EXTENSIONS_STATUS.name: _extensions,
}

ADAPTER: Final = Adapter(vendor="coocenter", actions=ACTIONS, build=build, parse=parse)
