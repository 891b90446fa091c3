"""Call Control Manager (``api.aspx``): provisioning of a source's extensions and phonebook.

The source's ``[sources.provisioning]`` table gives the full ``api.aspx`` address and the
security key. Every request is a POST whose URL carries, in the document's order,
``action``, ``qstype=1``, ``qsSecuritykey`` and ``qsValue`` (the JSON): the document lists both
``qsSecuritykey`` and ``qsValue`` under "URL Parameter" and prints every request as "HTTP POST
URL" with them in its query, so the JSON travels in the URL and the body is empty (a form body
is the other reading; nothing in the document shows one).

The document's JSON is typeset with smart quotes and is inconsistent; what is sent:

- add: ``{"sExtension": [{...}]}``. The "Adding a Single Extension" section shows
  ``sExtension`` (its opening quote lost), "Adding Multiple Extensions" ``mExtension``, update
  ``uExtension`` and the contacts ``sContact`` / ``uContact``: a one-letter prefix for single,
  multiple and update. The page's heading sample (``mExtension`` holding phonebook fields) is
  a template left unedited. One extension per command, so ``sExtension``.
- delete: the document prints no request (its "HTTP POST URL" line is empty). By the same
  scheme ``action=deleteExt`` with ``{"dExtension": [{"ExtentionNumber": ...}]}``, the one
  field its table lists.
- fields in the document's order, ``ExtentionNumber`` misspelt as it is everywhere in the
  document; an optional field not given is sent as ``""``, as every sample does (so an update
  sets an e-mail or caller id not given to empty: send the whole record).

Answers: ``{"status": "Extension Created", "errorMessage": "", "errorCode": ""}`` on success,
``{"message": ..., "errorCode": ...}`` on failure; the document's codes carry stray spaces
(``" WEBSERVICE_ERROR "``), stripped. ``AUTH_ID_EXPIRED`` is a refusal, not
:class:`bridge.errors.SessionExpired`: the key is configured, there is no login to renew.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import quote, urlencode

import msgspec

from bridge.commands import actions
from bridge.commands.actions import FIRST_NAME, LAST_NAME, PROVISION, Action, Arg
from bridge.commands.adapter import Adapter, json_body, unreadable
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.errors import CommandInvalid, CommandRefused

PHONE: Final = Arg(name="phone", summary="the contact's phone number")
COMPANY: Final = Arg(name="company", summary="the contact's company")

PHONEBOOK_ADD: Final = Action(
    name="phonebook.add",
    summary="add a contact to the PBX's phonebook",
    # "Adding a Contact": FirstName, LastName and PhoneNumber (Required), CompanyName.
    args=(FIRST_NAME.need(), LAST_NAME.need(), PHONE.need(), COMPANY),
)

ACTIONS: Final = actions.index([PROVISION, PHONEBOOK_ADD])

# operation -> (the api.aspx action, the qsValue key)
OPERATIONS: Final = {
    "add": ("addExt", "sExtension"),
    "update": ("updateExt", "uExtension"),
    "delete": ("deleteExt", "dExtension"),
}


def build(command: Command, target: Target) -> HttpRequest:
    prov = target.provisioning
    action, value = _value(command)
    query = [
        ("action", action),
        ("qstype", "1"),  # the document never says what it selects; every sample sends 1
        ("qsSecuritykey", prov.security_key),
        ("qsValue", json_body(value).decode()),
    ]
    separator = "&" if "?" in prov.url else "?"
    # safe="": the JSON's quotes, braces, colons and commas are all percent-encoded, so the
    # query cannot be split or re-read anywhere on the way.
    url = f"{prov.url}{separator}{urlencode(query, quote_via=quote, safe='')}"
    return HttpRequest(method="POST", url=url)


def _value(command: Command) -> tuple[str, dict[str, list[dict[str, str]]]]:
    args = command.args
    if command.action == PHONEBOOK_ADD.name:
        contact = {
            "FirstName": args["first_name"],
            "LastName": args["last_name"],
            "PhoneNumber": args["phone"],
            "CompanyName": args.get("company", ""),
        }
        return "addPhonebook", {"sContact": [contact]}
    if command.action != PROVISION.name:
        raise CommandInvalid("action", f"the Call Control Manager has no {command.action!r}")
    operation = args["operation"]
    action, key = OPERATIONS[operation]
    if operation == "delete":
        # The other arguments mean nothing to a delete: not sent.
        return action, {key: [{"ExtentionNumber": args["extension"]}]}
    if args.get("first_name") is None:
        # "FirstName First name of the user (Required)" for add and update alike.
        raise CommandInvalid("args.first_name", f"required to {operation} an extension")
    extension = {
        "ExtentionNumber": args["extension"],
        "EmailAddress": args.get("email", ""),
        "FirstName": args["first_name"],
        "LastName": args.get("last_name", ""),
        "OutboundCallerID": args.get("caller_id", ""),
    }
    return action, {key: [extension]}


# -- answers ---------------------------------------------------------------------------------

_json = msgspec.json.Decoder()
# Should the server answer as the document is typeset (“ ” and the ″ after "500").
_SMART: Final = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2033": '"'})
_KEY: Final = re.compile(r"(qsSecuritykey\s*[=:]\s*[\"']?)[^&\s\"'<>]+", re.IGNORECASE)


def parse(command: Command, answer: HttpAnswer) -> Result:
    decoded = _decoded(answer)
    code = _text(decoded.get("errorCode"))
    message = _text(decoded.get("message")) or _text(decoded.get("errorMessage"))
    status = _text(decoded.get("status"))
    if code is not None or not 200 <= answer.status < 300 or status is None:
        raise CommandRefused(
            _redact(
                message or status or f"the Call Control Manager refused (HTTP {answer.status})"
            ),
            vendor_code=code,
            status=answer.status,
        )
    return Result(data=_done(command), message=_redact(status))


def _decoded(answer: HttpAnswer) -> dict[str, Any]:
    for body in (answer.body, answer.text.translate(_SMART).encode()):
        try:
            decoded = _json.decode(body)
        except msgspec.DecodeError:
            continue
        if isinstance(decoded, dict):
            return decoded
        break
    text = _redact(" ".join(answer.text.split()))
    text = text if len(text) <= 200 else text[:200] + "..."
    raise unreadable(answer, text)


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


def _redact(text: str) -> str:
    return _KEY.sub(r"\1[redacted]", text)


def _done(command: Command) -> dict[str, Any]:
    args = command.args
    if command.action == PHONEBOOK_ADD.name:
        return {"phone": args["phone"]}
    return {"operation": args["operation"], "extension": args["extension"]}


ADAPTER: Final = Adapter(vendor="ccm", actions=ACTIONS, build=build, parse=parse)
