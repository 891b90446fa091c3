"""Coral IRIS IVDX: commands to its ``api/v3`` (the "CRM -> PBX" calls of its API document).

Every call is ``POST http://ServerIP:Port/api/v3`` with ``Authorization: api-key <key>`` and the
agent headers (``agentIP``, ``agentNumber``, ``agentID``, ``agentName``: the document's header
table). The document never says how the API name (``originatecall``, ...) travels, so
``api.api_name_in`` decides: appended to the path (the default, and the one shape the document
ever prints: ``api/v3agentrealtimestatus/``), a query parameter, a header, or a JSON body key,
each named by ``api.api_name_key``. Nor does it say how the request parameters travel; they go
as a JSON object, like every answer and push of this PBX.

Answers are ``{"status": 0|1, "message": ..., "data": ...}``: 0 is success, anything else is a
refusal quoting the vendor's message. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from bridge.commands import actions
from bridge.commands.actions import (
    AGENT,
    AGENT_LOGIN,
    AGENT_LOGOUT,
    AGENT_PAUSE,
    AGENT_UNPAUSE,
    CALL_ID,
    CALLS_ACTIVE,
    EXTENSION,
    EXTENSIONS_STATUS,
    HANGUP,
    HOLD,
    ORIGINATE,
    RESUME,
    TO,
    TO_KIND,
    TRANSFER,
    Arg,
)
from bridge.commands.adapter import Adapter, join, json_body, unreadable, with_query
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.config import SourceApi
from bridge.errors import CommandRefused

# queuetransfercall takes the caller's number beside the call's uuid ("calleridnumber  Caller
# Number"); the catalogue has no argument for the party being transferred, so Coral adds one.
CALLER: Final = Arg(
    name="caller", summary="the transferred caller's number (the popup's CallerNum)"
)

ACTIONS: Final = actions.index(
    [
        # originatecall takes only calleenumber: the party rung first is the agent the
        # agentNumber header names ("Extension or Phone number associated with agent").
        ORIGINATE,
        # killactivecalls ("forcibly kill any existing active calls", by uuid) is the only call
        # of the document that ends a call.
        HANGUP,
        HOLD,
        RESUME,
        # queuetransfercall moves a call to "No to be Transferred": a number or an extension.
        # The document has no transfer to a queue.
        TRANSFER.taking(
            CALL_ID.need(), TO.need(), TO_KIND.only("number", "extension"), CALLER.need()
        ),
        # agentlogin/agentlogout/agentbreak take no parameters: the agent is the agentID header.
        AGENT_LOGIN,
        AGENT_LOGOUT,
        # agentbreak takes no reason, so none is accepted (it could only be dropped).
        AGENT_PAUSE.taking(AGENT.need()),
        # The document has no end-of-break call; agentlogin ("get agent login in application")
        # is the one call that puts an agent back to taking calls.
        AGENT_UNPAUSE,
        CALLS_ACTIVE,
        EXTENSIONS_STATUS.taking(EXTENSION),
    ]
)

# catalogue action -> the Coral API name
API_NAMES: Final = {
    ORIGINATE.name: "originatecall",
    HANGUP.name: "killactivecalls",
    HOLD.name: "holdcall",
    RESUME.name: "unholdcall",
    TRANSFER.name: "queuetransfercall",
    AGENT_LOGIN.name: "agentlogin",
    AGENT_LOGOUT.name: "agentlogout",
    AGENT_PAUSE.name: "agentbreak",
    AGENT_UNPAUSE.name: "agentlogin",
    CALLS_ACTIVE.name: "getactivecalls",
    EXTENSIONS_STATUS.name: "agentrealtimestatus",
}
# The one call the document prints whole: "URL : http://ServerIP:Port/api/v3agentrealtimestatus/
# Method : GET". The missing slash after v3 is damage; the GET and the trailing slash are kept.
# Its name is in its URL, so api_name_in (which exists because the others are silent) does not
# apply to it.
AGENT_STATUS_PATH: Final = "api/v3/agentrealtimestatus/"

# The header table, in its order: header name -> SourceApi attribute.
AGENT_HEADERS: Final = (
    ("agentIP", "agent_ip"),
    ("agentNumber", "agent_number"),
    ("agentID", "agent_id"),
    ("agentName", "agent_name"),
)
_PERSON: Final = frozenset({"agentNumber", "agentID", "agentName"})


def build(command: Command, target: Target) -> HttpRequest:
    api = target.api
    args = command.args
    name = API_NAMES[command.action]
    if command.action == EXTENSIONS_STATUS.name:
        return HttpRequest(
            method="GET", url=join(api.url, AGENT_STATUS_PATH), headers=tuple(_headers(api, {}))
        )
    party: dict[str, str] = {}
    params: dict[str, str] = {}
    if command.action == ORIGINATE.name:
        party = {"agentNumber": args["from"]}
        params = {"calleenumber": args["to"]}
    elif command.action in (HANGUP.name, HOLD.name, RESUME.name):
        params = {"uuid": args["call_id"]}
    elif command.action == TRANSFER.name:
        # The document's order; "transfervnumber" is its spelling, kept: this vendor ships
        # misspelt keys (getactivecalls' "callere"), and a guessed fix is as likely wrong.
        params = {
            "calleridnumber": args["caller"],
            "uuid": args["call_id"],
            "transfervnumber": args["to"],
        }
    elif command.action.startswith("agent."):
        party = {"agentID": args["agent"]}
    return _request(api, name, _headers(api, party), params)


def _request(
    api: SourceApi, name: str, headers: list[tuple[str, str]], params: dict[str, str]
) -> HttpRequest:
    base = join(api.url, "api/v3")
    url = base
    headers.append(("Content-Type", "application/json"))
    if api.api_name_in == "path":
        url = join(base, name)
    elif api.api_name_in == "query":
        url = with_query(base, [(api.api_name_key, name)])
    elif api.api_name_in == "header":
        headers.append((api.api_name_key, name))
    else:  # body: the name first, then the document's parameters
        params = {api.api_name_key: name, **params}
    return HttpRequest(method="POST", url=url, headers=tuple(headers), body=json_body(params))


def _headers(api: SourceApi, party: Mapping[str, str]) -> list[tuple[str, str]]:
    """Authorization and the agent headers that are set.

    A command naming a party (originate's ``from``, an agent action's ``agent``) puts it in
    that header. If it is not the configured agent (the configured value of that header is set
    and differs), the configured agent's other identity headers describe someone else and are
    left out; ``agentIP`` (the machine, not the person) stays.
    """
    configured = {
        header: value for header, attr in AGENT_HEADERS if (value := getattr(api, attr)) is not None
    }
    someone_else = any(
        header in configured and configured[header] != v for header, v in party.items()
    )
    if someone_else:
        configured = {h: v for h, v in configured.items() if h not in _PERSON}
    values = {**configured, **party}
    headers = [("Authorization", f"api-key {api.api_key or ''}")]
    headers += [(header, values[header]) for header, _ in AGENT_HEADERS if header in values]
    return headers


# -- answers ---------------------------------------------------------------------------------

_json = msgspec.json.Decoder()
# A PBX that echoes the Authorization value in a refusal must not carry it into a message.
# A key has a digit in it (hex, a uuid); "Invalid api-key provided" is left as it is.
_KEY_ECHO: Final = re.compile(
    r"(api[-_ ]?key)(\s*[:=]\s*|\s+)(?=[^\s\"',;]*\d)[^\s\"',;]+", re.IGNORECASE
)


def parse(command: Command, answer: HttpAnswer) -> Result:
    wrapper = _wrapper(answer)
    message = _message(wrapper)
    data = wrapper.get("data")
    reader = _READERS.get(command.action)
    return Result(data=reader(command, data) if reader else {}, message=message)


def _wrapper(answer: HttpAnswer) -> dict[str, Any]:
    """The answer's ``{status, message, data}``, or :class:`CommandRefused` with its message.

    A 401 (a wrong api-key, as the simulator answers) is a refusal like any other: there is no
    login to renew, so it is not :class:`SessionExpired`.
    """
    try:
        decoded = _json.decode(answer.body)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise unreadable(answer, _redact(answer.text.strip())[:200])
    status = decoded.get("status")
    ok = status == 0 or status == "0"
    if ok and 200 <= answer.status < 300:
        return decoded
    data = decoded.get("data")
    code = data if isinstance(data, str) and data.strip() else None  # USER_NOT_EXISTS, ...
    if code is None and status is not None:
        code = str(status)
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
    return _KEY_ECHO.sub(r"\1\2[redacted]", text)


def _originated(command: Command, data: Any) -> dict[str, Any]:
    """The call's uuid when the PBX gives one: the document's answer has ``data: null``, a
    FreeSWITCH originate knows the uuid, and the simulator answers ``data: {"uuid": ...}``."""
    uuid = _text(data.get("uuid")) if isinstance(data, dict) else None
    return {"call_id": uuid}


def _active_calls(command: Command, data: Any) -> dict[str, Any]:
    # Strict: gap repair ends every open call this list does not name, so a row that cannot be
    # read (not an object, no uuid) refuses the whole answer rather than shortening it.
    # ``data: null`` is taken as no calls, the usual way for such an API to say so.
    if isinstance(data, list) and not all(isinstance(row, dict) for row in data):
        raise CommandRefused("getactivecalls answered a row that is not an object")
    calls = []
    for row in _rows(data):
        call = _active_call(row)
        if call is None:
            raise CommandRefused("getactivecalls answered a call without a uuid")
        calls.append(call)
    return {"calls": calls}


_DIRECTIONS: Final = {"in": "inbound", "out": "outbound", "internal": "internal"}


def _active_call(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """One getactivecalls row; ``call_id`` is its uuid stripped, as the pushes' call key is."""
    fields = {key.lower(): value for key, value in row.items()}
    call_id = _text(fields.get("uuid"))
    if call_id is None:  # no key to fold it into
        return None
    # "callere" (sic) is the PBX's side, "destination" the far end, whichever way the call goes:
    # the IN sample lists 9000 calling out to 13616549910 the way cdrevent lists its "in" call.
    extension = _text(fields.get("callere", fields.get("caller")))
    other = _text(fields.get("destination"))
    direction = _DIRECTIONS.get((_text(fields.get("direction")) or "").lower())
    from_, to = (other, extension) if direction == "inbound" else (extension, other)
    if direction is None:
        from_ = to = None
    return {
        "call_id": call_id,
        "from": from_,
        "to": to,
        "extension": extension,
        "state": (_text(fields.get("state")) or "unknown").lower(),
        "direction": direction,
        "other_party": other,
        "vendor_start_time": _text(fields.get("start_time")),  # naive PBX-local time
    }


# agentrealtimestatus' status -> extension state. The document shows "Available" and
# "LoggedOut"; the others are the states its counters (onring/ontalk/onhold) name.
_STATES: Final = {
    "available": "idle",
    "idle": "idle",
    "loggedout": "unavailable",
    "break": "unavailable",
    "onbreak": "unavailable",
    "ringing": "ringing",
    "talking": "in_call",
    "busy": "busy",
    "hold": "on_hold",
    "onhold": "on_hold",
}


def _extensions(command: Command, data: Any) -> dict[str, Any]:
    wanted = command.args.get("extension")
    out = []
    for row in _rows(data):
        fields = {key.lower(): value for key, value in row.items()}
        extension = _text(fields.get("contact"))
        if extension is None or (wanted is not None and extension != wanted):
            continue
        vendor_state = _text(fields.get("status"))
        key = re.sub(r"[\s_-]+", "", (vendor_state or "").lower())
        state = _STATES.get(key, "unknown")
        out.append({"extension": extension, "state": state, "vendor_state": vendor_state})
    return {"extensions": out}


def _rows(data: Any) -> list[Mapping[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise CommandRefused(f"the PBX answered a {type(data).__name__} where a list belongs")
    return [row for row in data if isinstance(row, dict)]


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


_READERS: Final[dict[str, Callable[[Command, Any], dict[str, Any]]]] = {
    ORIGINATE.name: _originated,
    CALLS_ACTIVE.name: _active_calls,
    EXTENSIONS_STATUS.name: _extensions,
}

ADAPTER: Final = Adapter(vendor="coral", actions=ACTIONS, build=build, parse=parse)
