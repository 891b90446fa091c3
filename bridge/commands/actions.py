"""The normalised actions, their arguments, and the one check every command passes.

Every vendor adapter says which actions it supports by listing :class:`Action` values built
from this catalogue, with the arguments that vendor takes (a vendor that hangs up by extension
requires ``extension``; one that hangs up by call id requires ``call_id``). So the
capabilities a source shows, the JSON Schema of each action, and the check of a CRM's
arguments all come from the same values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from bridge.errors import CommandInvalid

ArgKind = Literal["string", "boolean", "integer"]

MAX_STRING: Final = 256
# Arguments travel in URLs, headers and form bodies: control characters (CR/LF above all)
# would let a caller forge headers or parameters, so they are refused outright.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Arg:
    name: str
    summary: str
    kind: ArgKind = "string"
    required: bool = False
    choices: tuple[str, ...] = ()
    default: str | bool | int | None = None

    def need(self) -> Arg:
        return replace(self, required=True)

    def only(self, *choices: str) -> Arg:
        return replace(self, choices=choices)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "description": self.summary}
        if self.kind == "string":
            out |= {"minLength": 1, "maxLength": MAX_STRING}
        if self.choices:
            out["enum"] = list(self.choices)
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """An action as one vendor supports it. ``query`` actions change nothing at the PBX: they
    are answered directly and not written to the outbox."""

    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    query: bool = False

    def taking(self, *args: Arg) -> Action:
        return replace(self, args=args)

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {arg.name: arg.schema() for arg in self.args},
            "required": [arg.name for arg in self.args if arg.required],
            "additionalProperties": False,
        }


# -- the arguments, shared so that one name means one thing across vendors ------------------

FROM: Final = Arg(name="from", summary="the extension or agent number that places the call")
TO: Final = Arg(name="to", summary="the number, extension or queue to call or transfer to")
TO_KIND: Final = Arg(
    name="to_kind",
    summary="what 'to' is",
    choices=("number", "extension", "queue"),
    default="number",
)
CALL_ID: Final = Arg(name="call_id", summary="the vendor's call id (data.call_id of the events)")
EXTENSION: Final = Arg(name="extension", summary="the extension number")
AGENT: Final = Arg(name="agent", summary="the agent's id or number, as the PBX knows it")
QUEUE: Final = Arg(name="queue", summary="the queue (or skill group) code")
REASON: Final = Arg(name="reason", summary="why: a pause reason, as the PBX takes it")
AVAILABLE: Final = Arg(name="available", summary="true: take calls; false: stop", kind="boolean")
CALLER_ID: Final = Arg(name="caller_id", summary="the number to show to the called party")
OPERATION: Final = Arg(
    name="operation", summary="what to do with the extension", choices=("add", "update", "delete")
)
FIRST_NAME: Final = Arg(name="first_name", summary="the user's first name")
LAST_NAME: Final = Arg(name="last_name", summary="the user's last name")
EMAIL: Final = Arg(name="email", summary="the user's e-mail address")
SINCE: Final = Arg(name="since", summary="RFC 3339 time or epoch seconds: records from then on")
UNTIL: Final = Arg(name="until", summary="RFC 3339 time or epoch seconds: records until then")
PAGE: Final = Arg(name="page", summary="the page of the vendor's listing, from 1", kind="integer")

# -- the catalogue: every action, with the arguments most vendors take ----------------------

ORIGINATE: Final = Action(
    name="call.originate",
    summary="click-to-call: ring 'from', then connect it to 'to'",
    args=(FROM.need(), TO.need()),
)
HANGUP: Final = Action(name="call.hangup", summary="end a call", args=(CALL_ID.need(),))
TRANSFER: Final = Action(
    name="call.transfer",
    summary="transfer a call to a number, extension or queue",
    args=(CALL_ID.need(), TO.need(), TO_KIND),
)
HOLD: Final = Action(name="call.hold", summary="put a call on hold", args=(CALL_ID.need(),))
RESUME: Final = Action(name="call.resume", summary="take a call off hold", args=(CALL_ID.need(),))
AGENT_LOGIN: Final = Action(
    name="agent.login", summary="log an agent in to take calls", args=(AGENT.need(),)
)
AGENT_LOGOUT: Final = Action(name="agent.logout", summary="log an agent out", args=(AGENT.need(),))
AGENT_PAUSE: Final = Action(
    name="agent.pause", summary="pause an agent (a break)", args=(AGENT.need(), REASON)
)
AGENT_UNPAUSE: Final = Action(
    name="agent.unpause", summary="end an agent's pause", args=(AGENT.need(),)
)
AGENT_AVAILABLE: Final = Action(
    name="agent.set_available",
    summary="make an agent's number take incoming calls, or stop",
    args=(AGENT.need(), AVAILABLE.need()),
)
PROVISION: Final = Action(
    name="extension.provision",
    summary="add, update or delete an extension",
    args=(OPERATION.need(), EXTENSION.need(), FIRST_NAME, LAST_NAME, EMAIL, CALLER_ID),
)
CALLS_ACTIVE: Final = Action(
    name="calls.active", summary="the calls in progress at the PBX now", query=True
)
EXTENSIONS_STATUS: Final = Action(
    name="extensions.status",
    summary="the state of one extension, or of all",
    args=(EXTENSION,),
    query=True,
)
CALLS_HISTORY: Final = Action(
    name="calls.history",
    summary="the PBX's call records (the reconcile run reads this)",
    args=(SINCE, UNTIL, PAGE),
    query=True,
)

CATALOGUE: Final[tuple[Action, ...]] = (
    ORIGINATE,
    HANGUP,
    TRANSFER,
    HOLD,
    RESUME,
    AGENT_LOGIN,
    AGENT_LOGOUT,
    AGENT_PAUSE,
    AGENT_UNPAUSE,
    AGENT_AVAILABLE,
    PROVISION,
    CALLS_ACTIVE,
    EXTENSIONS_STATUS,
    CALLS_HISTORY,
)
NAMES: Final = tuple(action.name for action in CATALOGUE)


def index(actions: Iterable[Action]) -> dict[str, Action]:
    return {action.name: action for action in actions}


def check(action: Action, args: object) -> dict[str, Any]:
    """The arguments if they fit ``action`` (defaults filled in), else :class:`CommandInvalid`
    naming the argument (``args.to``) and what was wrong with it."""
    if not isinstance(args, Mapping):
        raise CommandInvalid("args", f"expected an object, got {type(args).__name__}")
    known = {arg.name: arg for arg in action.args}
    for name in args:
        if name not in known:
            expected = ", ".join(known) or "none"
            raise CommandInvalid(
                f"args.{name}", f"{action.name} takes no such argument (it takes: {expected})"
            )
    out: dict[str, Any] = {}
    for arg in action.args:
        value = args.get(arg.name)
        if value is None:
            if arg.required:
                raise CommandInvalid(f"args.{arg.name}", f"required by {action.name}")
            if arg.default is not None:
                out[arg.name] = arg.default
            continue
        out[arg.name] = _value(arg, value)
    return out


def _value(arg: Arg, value: object) -> object:
    where = f"args.{arg.name}"
    if arg.kind == "boolean":
        if not isinstance(value, bool):
            raise CommandInvalid(where, f"expected true or false, got {value!r}")
        return value
    if arg.kind == "integer":
        if isinstance(value, str) and value.isdigit():  # from a command line or a form
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CommandInvalid(where, f"expected a whole number from 1, got {value!r}")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # a number dialled is a string; accept 808 for "808"
    if not isinstance(value, str):
        raise CommandInvalid(where, f"expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise CommandInvalid(where, "must not be empty")
    if len(text) > MAX_STRING:
        raise CommandInvalid(where, f"longer than {MAX_STRING} characters")
    if _CONTROL.search(text):
        raise CommandInvalid(where, "contains a control character")
    if arg.choices and text not in arg.choices:
        raise CommandInvalid(where, f"expected one of {', '.join(arg.choices)}, got {text!r}")
    return text
