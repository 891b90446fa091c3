"""A simulated Call Control Manager (``POST /api.aspx``): what :mod:`bridge.commands.ccm` sends,
answered with the document's JSON (``{"status": "Extension Created", "errorMessage": "",
"errorCode": ""}``).

State: :attr:`extensions` (number -> the record as last sent) and :attr:`phonebook` (phone ->
contact). Failure modes, each driven by what the request carries, answered HTTP 200 with the
document's ``{"message", "errorCode"}`` (the document prints bodies only) unless noted:

- a wrong ``qsSecuritykey``: ``INVALID_AUTH_ID`` "Authentication Token invalid";
- ``qsValue`` that is not JSON: HTTP 500 with errorCode ``500`` "Internal Server error";
- an extension number empty or not digits: ``INVALID_EXTENSION``; an empty first name:
  ``FNAME_INVALID``; an e-mail without ``name@domain``: ``INVALID_EMAIL``; a contact's empty
  first or last name or a phone number not digits: ``FNAME_INVALID`` / ``LNAME_INVALID`` /
  ``PHONE_NUMBER_INVALID`` (the document's "Error Handling" list);
- adding an extension or contact that exists, updating or deleting an extension that does not,
  a missing ``qsValue`` key, a ``qstype`` other than 1, an unknown action: ``WEBSERVICE_ERROR``
  with the detail (the per-operation sections' "Exception Detail ... Extension number does not
  exit"). Delete and contact answers carry the code as the document prints them there, with
  stray spaces (``" WEBSERVICE_ERROR "``), so a client must strip it;
- :meth:`stall`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from bridge.simulate.api_common import ApiServer

PATH: Final = "/api.aspx"
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DIGITS: Final = re.compile(r"\d+")


class Refusal(Exception):
    """A failure answer: the document's ``{"message", "errorCode"}`` and the HTTP status."""

    def __init__(self, message: str, code: str, status: int = 200) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def _detail(message: str, *, spaced: bool = False) -> Refusal:
    return Refusal(message, " WEBSERVICE_ERROR " if spaced else "WEBSERVICE_ERROR")


class CcmApi(ApiServer):
    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, security_key: str = "dev-ccm-key"
    ) -> None:
        super().__init__(host=host, port=port)
        self.security_key = security_key
        self.extensions: dict[str, dict[str, Any]] = {}
        self.phonebook: dict[str, dict[str, Any]] = {}

    @property
    def endpoint(self) -> str:
        """The full ``api.aspx`` address, for ``[sources.provisioning] url``."""
        return f"{self.url}{PATH}"

    async def __aenter__(self) -> CcmApi:
        await super().__aenter__()
        return self

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._handle)

    def snippet(self) -> str:
        """The ``[sources.provisioning]`` table that points a source at this simulator."""
        return (
            "[sources.provisioning]\n"
            f"url = {json.dumps(self.endpoint)}\n"
            f"security_key = {json.dumps(self.security_key)}\n"
        )

    async def _handle(self, request: web.Request) -> web.Response:
        query = request.query
        action = query.get("action", "")
        await self.record(request, action)
        try:
            if query.get("qsSecuritykey") != self.security_key:
                raise Refusal("Authentication Token invalid", "INVALID_AUTH_ID")
            if query.get("qstype") != "1":
                raise _detail(f"Unsupported qstype {query.get('qstype')!r}")
            handler = self._handlers().get(action)
            if handler is None:
                raise _detail(f"Unknown action {action!r}")
            status = handler(_value(query.get("qsValue")))
        except Refusal as refusal:
            body = {"message": refusal.message, "errorCode": refusal.code}
            return web.json_response(body, status=refusal.status)
        return web.json_response({"status": status, "errorMessage": "", "errorCode": ""})

    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any]], str]]:
        return {
            "addExt": self._add_ext,
            "updateExt": self._update_ext,
            "deleteExt": self._delete_ext,
            "addPhonebook": self._add_contact,
        }

    def _add_ext(self, value: Mapping[str, Any]) -> str:
        # The document's single add says sExtension, its multiple add mExtension: take both.
        key = "sExtension" if "sExtension" in value else "mExtension"
        rows = _rows(value, key)
        for row in rows:
            number = _extension(row)
            _person(row)
            if number in self.extensions:
                raise Refusal("Extension number already exist", "WEBSERVICE_ERROR")
        for row in rows:
            self.extensions[_extension(row)] = dict(row)
        return "Extension Created" if len(rows) == 1 else "All Extension Created"

    def _update_ext(self, value: Mapping[str, Any]) -> str:
        for row in _rows(value, "uExtension"):
            number = _extension(row)
            _person(row)
            if number not in self.extensions:
                raise _detail("Extension number does not exit")
            self.extensions[number] = dict(row)
        return "Extension Updated"

    def _delete_ext(self, value: Mapping[str, Any]) -> str:
        for row in _rows(value, "dExtension"):
            number = _extension(row)
            if self.extensions.pop(number, None) is None:
                raise _detail("Extension number does not exit", spaced=True)
        return "Extension Deleted"

    def _add_contact(self, value: Mapping[str, Any]) -> str:
        for row in _rows(value, "sContact"):
            if not _field(row, "FirstName"):
                raise Refusal("Invalid First name", "FNAME_INVALID")
            if not _field(row, "LastName"):
                raise Refusal("Invalid Last name", "LNAME_INVALID")
            phone = _field(row, "PhoneNumber").lstrip("+")
            if not _DIGITS.fullmatch(phone):
                raise Refusal("Invalid Phone Number", "PHONE_NUMBER_INVALID")
            if phone in self.phonebook:
                raise _detail("Contact already exist", spaced=True)
            self.phonebook[phone] = dict(row)
        return "Contact Created"


def _value(raw: str | None) -> Mapping[str, Any]:
    if raw is None:
        raise _detail("qsValue is missing")
    try:
        value = json.loads(raw)
    except ValueError:
        raise Refusal("Internal Server error", "500", status=500) from None
    if not isinstance(value, dict):
        raise _detail("qsValue is not a JSON object")
    return value


def _rows(value: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    rows = value.get(key)
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise _detail(f"qsValue has no {key} list")
    return rows


def _field(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    return value.strip() if isinstance(value, str) else ""


def _extension(row: Mapping[str, Any]) -> str:
    number = _field(row, "ExtentionNumber")  # sic: the document's spelling throughout
    if not _DIGITS.fullmatch(number):
        raise Refusal("Invalid Extension number", "INVALID_EXTENSION")
    return number


def _person(row: Mapping[str, Any]) -> None:
    if not _field(row, "FirstName"):
        raise Refusal("Invalid First name", "FNAME_INVALID")
    email = _field(row, "EmailAddress")
    if email and not _EMAIL.fullmatch(email):
        raise Refusal("Invalid Email Address", "INVALID_EMAIL")
