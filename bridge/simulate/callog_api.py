"""A simulated cloud IVR settings API (``GET /settings/handler.ashx``): what
:mod:`bridge.commands.callog` sends, answered in plain text as the document shows (``Success``).

State: :attr:`available` (agent number -> takes calls), :attr:`holidays` (YYYY-MM-DD dates),
:attr:`office_hours` (day -> (start, end) as sent). Failure modes, each driven by what the
request carries, every one a 200 with a plain-text refusal (the document prints no status
code; its one failure text, ``Invalid Time``, is a body): a wrong ``apikey`` or ``custid``
(``Invalid API Key``), an agent number the account does not have (``Invalid Agent Number``), a
status other than OFF/AVAIL, a date that is not YYYY-MM-DD (``Invalid Date``), a day not in
the document's list, a time not ``HH:MI AM/PM`` or an end not after its start
(``Invalid Time``), an action it does not know; and :meth:`stall`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from typing import Final

from aiohttp import web

from bridge.simulate.api_common import ApiServer

PATH: Final = "/settings/handler.ashx"
DAYS: Final = frozenset(
    {"Daily", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
)
_TIME: Final = re.compile(r"(0[1-9]|1[0-2]):([0-5]\d) (AM|PM)")


class CallogApi(ApiServer):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "dev-ivr-key",
        customer_id: str = "dev-customer",
        agents: Sequence[str] = ("9876543210", "9876543211"),
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key, self.customer_id = api_key, customer_id
        # Every agent number of the account starts taking calls, as a new account's do.
        self.available: dict[str, bool] = {agent: True for agent in agents}
        self.holidays: set[str] = set()
        self.office_hours: dict[str, tuple[str, str]] = {}

    async def __aenter__(self) -> CallogApi:
        await super().__aenter__()
        return self

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self._handle)

    def snippet(self) -> str:
        """The ``[sources.api]`` table that points a callog source at this simulator."""
        return (
            "[sources.api]\n"
            f"url = {json.dumps(self.url)}\n"
            f"api_key = {json.dumps(self.api_key)}\n"
            f"customer_id = {json.dumps(self.customer_id)}\n"
        )

    async def _handle(self, request: web.Request) -> web.Response:
        query = request.query
        action = query.get("action", "")
        await self.record(request, action)
        if query.get("apikey") != self.api_key or query.get("custid") != self.customer_id:
            # Never echoes what was sent: the key must not come back in a message.
            return _text("Invalid API Key")
        if action == "ManageAgent":
            return _text(self._manage_agent(query.get("agentnum", ""), query.get("status", "")))
        if action == "holiday":
            return _text(self._holiday(query.get("hdate", "")))
        if action == "OfficeTime":
            day, start, end = (query.get(k, "") for k in ("day", "st_time", "en_time"))
            return _text(self._office_time(day, start, end))
        return _text("Invalid Action")

    def _manage_agent(self, agent: str, status: str) -> str:
        if agent not in self.available:
            return "Invalid Agent Number"
        # The document writes the value OFF/AVAIL in its URL and OFF/Avail in its table.
        if status.upper() not in ("OFF", "AVAIL"):
            return "Invalid Status"
        self.available[agent] = status.upper() == "AVAIL"
        return "Success"

    def _holiday(self, hdate: str) -> str:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", hdate):
                raise ValueError
            date.fromisoformat(hdate)
        except ValueError:
            return "Invalid Date"
        self.holidays.add(hdate)
        return "Success"

    def _office_time(self, day: str, start: str, end: str) -> str:
        if day not in DAYS:
            return "Invalid Day"
        opens, closes = _minutes(start), _minutes(end)
        if opens is None or closes is None or closes <= opens:
            return "Invalid Time"
        self.office_hours[day] = (start, end)
        return "Success"


def _minutes(value: str) -> int | None:
    """``06:30 PM`` -> 1110 (minutes since midnight); ``None`` if not ``HH:MI AM/PM``."""
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    hour, minute, half = int(match.group(1)) % 12, int(match.group(2)), match.group(3)
    return (hour + (12 if half == "PM" else 0)) * 60 + minute


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain")
