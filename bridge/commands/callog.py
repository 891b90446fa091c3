"""Cloud IVR ("ibizfone" document, sections 3-5): its settings API, ``settings/handler.ashx``.

Every command is a GET on ``<api.url>/settings/handler.ashx`` whose query starts with
``apikey`` and ``custid`` (the source's ``api.api_key`` and ``api.customer_id``) and then
``action`` and that action's parameters, in the order of the document's sample URLs. There are
three: an agent's number taking calls or not (``ManageAgent``), a holiday (``holiday``) and
office hours (``OfficeTime``); the last two are vendor actions, not in the catalogue.

The document prints only ``Success`` as an answer (and ``Invalid Time`` for office hours; the
call-log section's own failure is ``Invalid Data / Failure``): plain text, no status code, no
JSON. So an answer is read as text (or a JSON wrapper's status/message, should one come): a
non-2xx, or text with an error word, is a refusal quoting it; a 2xx saying success is done;
anything else is a refusal too, since these settings are idempotent and a refusal that was in
fact carried out costs a resend, while a success that was not would leave an agent unreachable
or a holiday unset. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Final
from urllib.parse import quote, urlencode

import msgspec

from bridge.commands import actions
from bridge.commands.actions import AGENT, AGENT_AVAILABLE, AVAILABLE, Action, Arg
from bridge.commands.adapter import Adapter, join
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.errors import CommandInvalid, CommandRefused

PATH: Final = "settings/handler.ashx"

# -- the vendor's own actions (not in the catalogue) -----------------------------------------

DATE: Final = Arg(name="date", summary="the holiday, YYYY-MM-DD (the IVR's local date)")
# Section 5's list, spelt as the document spells it ("Daily" applies to every day).
DAYS: Final = (
    "Daily",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
DAY: Final = Arg(name="day", summary="the day the hours apply to, or Daily", choices=DAYS)
START: Final = Arg(name="start", summary="when the office opens, HH:MI AM/PM (09:30 AM)")
END: Final = Arg(name="end", summary="when the office closes, HH:MI AM/PM (06:00 PM)")

HOLIDAY: Final = Action(
    name="ivr.holiday",
    summary="make a date a holiday: callers hear the uploaded holiday message",
    args=(DATE.need(),),
)
OFFICE_HOURS: Final = Action(
    name="ivr.office_hours",
    summary="set a day's office hours: outside them callers hear the uploaded message",
    args=(DAY.need(), START.need(), END.need()),
)

ACTIONS: Final = actions.index(
    [
        # ManageAgent: "Agent number can be made active or inactive for receiving incoming
        # calls": an agent is a phone number here.
        AGENT_AVAILABLE.taking(AGENT.need(), AVAILABLE.need()),
        HOLIDAY,
        OFFICE_HOURS,
    ]
)

# The sample URL says status=OFF/AVAIL, the table OFF/Avail: the URL's spelling is what is sent.
STATUS: Final = {True: "AVAIL", False: "OFF"}
# "agentnum=<agent phone number>": digits, with a leading + for an international number.
_PHONE: Final = re.compile(r"\+?\d{6,15}")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
# "HH:MI AM/PM (Hours:Minutes)": a 12-hour clock. A one-digit hour or lower-case am/pm is
# accepted and sent as the document writes it (09:30 AM).
_TIME: Final = re.compile(r"(0?[1-9]|1[0-2]):([0-5]\d)\s*([AaPp][Mm])")


def build(command: Command, target: Target) -> HttpRequest:
    api = target.api
    if api.api_key is None or api.customer_id is None:
        # config_commands requires both for a callog source; a Target built by hand may not.
        raise CommandInvalid("api", "a callog source's [sources.api] needs api_key and customer_id")
    query = [("apikey", api.api_key), ("custid", api.customer_id), *_params(command)]
    # Spaces as %20, not '+': the document's times carry one (st_time=HH:MI AM/PM) and %20 is
    # read as a space by every query parser, where '+' is only by form-style ones. ':' is legal
    # in a query (RFC 3986 section 3.4), so it stays as the document prints it.
    url = f"{join(api.url, PATH)}?{urlencode(query, quote_via=quote, safe=':')}"
    return HttpRequest(method="GET", url=url)


def _params(command: Command) -> list[tuple[str, str]]:
    args = command.args
    if command.action == AGENT_AVAILABLE.name:
        agent = args["agent"]
        if not _PHONE.fullmatch(agent):
            raise CommandInvalid("args.agent", f"expected the agent's phone number, got {agent!r}")
        return [
            ("action", "ManageAgent"),
            ("agentnum", agent),
            ("status", STATUS[args["available"]]),
        ]
    if command.action == HOLIDAY.name:
        return [("action", "holiday"), ("hdate", holiday_date(args["date"]))]
    if command.action == OFFICE_HOURS.name:
        return [
            ("action", "OfficeTime"),
            ("day", args["day"]),
            ("st_time", office_time("args.start", args["start"])),
            ("en_time", office_time("args.end", args["end"])),
        ]
    raise CommandInvalid("action", f"callog has no action {command.action!r}")


def holiday_date(value: str) -> str:
    """``value`` if it is a real calendar date as YYYY-MM-DD, else :class:`CommandInvalid`."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        date.fromisoformat(value)  # the calendar: 2024-02-30 is no date
    except ValueError:
        raise CommandInvalid("args.date", f"expected a date as YYYY-MM-DD, got {value!r}") from None
    return value


def office_time(where: str, value: str) -> str:
    """``value`` as the document's ``HH:MI AM/PM`` (``9:5 pm`` is refused, ``9:05 pm`` is
    ``09:05 PM``), else :class:`CommandInvalid` naming ``where``."""
    match = _TIME.fullmatch(value)
    if match is None:
        raise CommandInvalid(where, f"expected a time as HH:MI AM/PM (09:30 AM), got {value!r}")
    hour, minute, half = match.groups()
    return f"{int(hour):02d}:{minute} {half.upper()}"


# -- answers ---------------------------------------------------------------------------------

_json = msgspec.json.Decoder()
# Checked before success: "Unsuccessful" holds "success".
_ERROR: Final = re.compile(
    r"invalid|fail|error|unsuccess|denied|wrong|incorrect|unauthori[sz]ed|not\s+found|"
    r"not\s+exist|does\s+not|exception|expired|forbidden|blocked",
    re.IGNORECASE,
)
_SUCCESS: Final = re.compile(r"success|accepted|\bok\b|\bdone\b|updated|saved", re.IGNORECASE)
# A PBX error page may echo the request URL: its credentials must not travel on.
_CREDENTIAL: Final = re.compile(r"((?:apikey|custid)\s*[=:]\s*[\"']?)[^&\s\"'<>]+", re.IGNORECASE)
_TITLE: Final = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG: Final = re.compile(r"<[^>]+>")


def parse(command: Command, answer: HttpAnswer) -> Result:
    text = _said(answer)
    shown = text or "an empty answer"
    if not 200 <= answer.status < 300:
        raise CommandRefused(f"HTTP {answer.status}: {shown}", status=answer.status)
    if _ERROR.search(text):
        raise CommandRefused(text, status=answer.status)
    if not _SUCCESS.search(text):
        raise CommandRefused(
            f"the IVR answered neither Success nor an error: {shown!r}", status=answer.status
        )
    return Result(data=_done(command), message=text)


def _said(answer: HttpAnswer, limit: int = 200) -> str:
    """What the IVR said: its text, a JSON wrapper's status/message, or an HTML page's title;
    credentials echoed in it redacted, cut to ``limit``."""
    text = answer.text.strip()
    try:
        decoded = _json.decode(answer.body)
    except msgspec.DecodeError:
        decoded = None
    if isinstance(decoded, dict):
        parts = [
            str(decoded[key]).strip()
            for key in ("status", "message", "msg", "result", "error")
            if isinstance(decoded.get(key), str | int) and str(decoded[key]).strip()
        ]
        text = " - ".join(parts) or text
    elif isinstance(decoded, str):
        text = decoded.strip()
    elif text.startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
        text = " ".join(text.split())
    text = _CREDENTIAL.sub(r"\1[redacted]", text)
    return text if len(text) <= limit else text[:limit] + "..."


def _done(command: Command) -> dict[str, Any]:
    """What was set, normalised (the IVR answers only ``Success``)."""
    args = command.args
    if command.action == AGENT_AVAILABLE.name:
        return {"agent": args["agent"], "available": args["available"]}
    if command.action == HOLIDAY.name:
        return {"date": args["date"]}
    if command.action == OFFICE_HOURS.name:
        return {
            "day": args["day"],
            "start": office_time("args.start", args["start"]),
            "end": office_time("args.end", args["end"]),
        }
    return {}


ADAPTER: Final = Adapter(vendor="callog", actions=ACTIONS, build=build, parse=parse)
