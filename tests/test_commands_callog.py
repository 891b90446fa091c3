"""Cloud IVR settings commands: the adapter against the document's URLs, and the simulated API."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from bridge.commands import actions
from bridge.commands.callog import ADAPTER
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.config import SourceApi, SourceConfig
from bridge.config_commands import api_problems
from bridge.errors import CommandInvalid, CommandRefused
from bridge.simulate.callog_api import CallogApi
from tests.conftest import until

BASE = "http://127.0.0.1:18000"
KEY = "dev-ivr-key"
CUSTOMER = "dev-customer"
HANDLER = f"{BASE}/settings/handler.ashx?apikey={KEY}&custid={CUSTOMER}"


def target(url: str = BASE, api_key: str = KEY, customer_id: str = CUSTOMER) -> Target:
    api = SourceApi(url=url, api_key=api_key, customer_id=customer_id)
    return Target(source=SourceConfig(name="ivr", vendor="callog", api=api), now=1.7e9)


def command(action: str, **args: Any) -> Command:
    """A command as the service hands it over: checked and defaulted by the catalogue."""
    checked = actions.check(ADAPTER.actions[action], args)
    return Command(source="ivr", action=action, args=checked)


def build(action: str, tgt: Target | None = None, /, **args: Any) -> HttpRequest:
    return ADAPTER.build(command(action, **args), tgt or target())


def parse(action: str, body: bytes, *, status: int = 200, **args: Any) -> Result:
    answer = HttpAnswer(status=status, headers={"content-type": "text/plain"}, body=body)
    return ADAPTER.parse(command(action, **args), answer)


AGENT_ON: dict[str, Any] = {"agent": "9876543210", "available": True}
HOLIDAY: dict[str, Any] = {"date": "2024-08-15"}
HOURS: dict[str, Any] = {"day": "Monday", "start": "09:30 AM", "end": "06:00 PM"}

# -- requests: the document's sample URLs ----------------------------------------------------


@pytest.mark.parametrize(("available", "status"), [(True, "AVAIL"), (False, "OFF")])
def test_agent_availability_is_the_documents_manage_agent_url(available: bool, status: str) -> None:
    """ManageAgent: apikey, custid, action, agentnum, status, in that order, as a bare GET."""
    request = build("agent.set_available", agent="9876543210", available=available)
    assert request.method == "GET"
    assert request.url == f"{HANDLER}&action=ManageAgent&agentnum=9876543210&status={status}"
    assert request.body == b""
    assert request.headers == ()


def test_holiday_is_the_documents_holiday_url() -> None:
    """holiday: action=holiday&hdate=YYYY-MM-DD after the credentials."""
    request = build("ivr.holiday", **HOLIDAY)
    assert request.url == f"{HANDLER}&action=holiday&hdate=2024-08-15"


def test_office_hours_is_the_documents_office_time_url() -> None:
    """OfficeTime: day, st_time, en_time; the space of HH:MI AM/PM as %20, the colon as is."""
    request = build("ivr.office_hours", **HOURS)
    assert request.url == (
        f"{HANDLER}&action=OfficeTime&day=Monday&st_time=09:30%20AM&en_time=06:00%20PM"
    )


def test_office_hours_are_sent_as_hh_mi_upper_case() -> None:
    """A one-digit hour and lower-case am/pm are sent as the document writes them."""
    request = build("ivr.office_hours", day="Daily", start="9:05 am", end="5:30pm")
    assert request.url.endswith("&day=Daily&st_time=09:05%20AM&en_time=05:30%20PM")


def test_base_url_with_a_trailing_slash_gets_one_slash() -> None:
    """The api url may end in a slash: the path still has exactly one."""
    request = build("ivr.holiday", target(url=f"{BASE}/"), **HOLIDAY)
    assert request.url.startswith(f"{BASE}/settings/handler.ashx?")


def test_credentials_are_percent_encoded_so_they_cannot_add_parameters() -> None:
    """A key holding & or = stays one value: it cannot forge an action or a status."""
    request = build("ivr.holiday", target(api_key="k&action=x", customer_id="c 1"), **HOLIDAY)
    assert request.url == (
        f"{BASE}/settings/handler.ashx?apikey=k%26action%3Dx&custid=c%201"
        "&action=holiday&hdate=2024-08-15"
    )


@pytest.mark.parametrize(
    "bad", ["2024-02-30", "2024-13-01", "2024-1-05", "15-08-2024", "20240815", "tomorrow"]
)
def test_a_bad_holiday_date_is_refused_naming_the_argument(bad: str) -> None:
    """hdate must be a real YYYY-MM-DD date; the refusal names args.date."""
    with pytest.raises(CommandInvalid) as caught:
        build("ivr.holiday", date=bad)
    assert caught.value.field == "args.date"
    assert bad in caught.value.problem


@pytest.mark.parametrize("bad", ["13:00 PM", "00:30 AM", "09:60 AM", "9:5 PM", "09:30", "18:00"])
@pytest.mark.parametrize("which", ["start", "end"])
def test_a_bad_office_time_is_refused_naming_the_argument(which: str, bad: str) -> None:
    """st_time / en_time must be HH:MI AM/PM; the refusal names args.start or args.end."""
    with pytest.raises(CommandInvalid) as caught:
        build("ivr.office_hours", **(HOURS | {which: bad}))
    assert caught.value.field == f"args.{which}"


def test_a_day_outside_the_documents_list_is_refused() -> None:
    """day takes Daily or a weekday name as the document spells them."""
    with pytest.raises(CommandInvalid) as caught:
        command("ivr.office_hours", **(HOURS | {"day": "monday"}))
    assert caught.value.field == "args.day"


def test_an_agent_that_is_not_a_phone_number_is_refused() -> None:
    """agentnum is the agent's phone number: a name is refused before anything is sent."""
    with pytest.raises(CommandInvalid) as caught:
        build("agent.set_available", agent="alice", available=True)
    assert caught.value.field == "args.agent"


def test_only_the_documents_three_settings_are_offered() -> None:
    """No click-to-call or queries: the document has agent on/off, holiday and office time."""
    assert set(ADAPTER.actions) == {"agent.set_available", "ivr.holiday", "ivr.office_hours"}
    assert ADAPTER.actions["ivr.office_hours"].schema()["required"] == ["day", "start", "end"]


# -- answers ---------------------------------------------------------------------------------


def test_success_is_a_result_saying_what_was_set() -> None:
    """The document's "Success" is done; data says what was set, normalised."""
    result = parse("ivr.office_hours", b"Success", day="Friday", start="9:00 am", end="5:00 pm")
    assert result == Result(
        data={"day": "Friday", "start": "09:00 AM", "end": "05:00 PM"}, message="Success"
    )
    assert parse("agent.set_available", b"Success\r\n", **AGENT_ON).data == AGENT_ON


@pytest.mark.parametrize("text", ["Invalid Time", "Invalid Data / Failure", "Unsuccessful"])
def test_a_failure_text_is_a_refusal_quoting_it(text: str) -> None:
    """The document's failure texts (and an "Unsuccessful") are refusals with that text."""
    with pytest.raises(CommandRefused) as caught:
        parse("ivr.office_hours", text.encode(), **HOURS)
    assert caught.value.message == text


def test_a_non_2xx_answer_is_a_refusal_with_its_status() -> None:
    """An HTTP error is refused even if its body says Success."""
    with pytest.raises(CommandRefused) as caught:
        parse("ivr.holiday", b"Success", status=503, **HOLIDAY)
    assert caught.value.status == 503
    assert "503" in caught.value.message


@pytest.mark.parametrize("body", [b"", b"agent"])
def test_an_answer_saying_neither_success_nor_error_is_refused(body: bytes) -> None:
    """Only a success text is success: an empty or unexpected 200 is not taken as done."""
    with pytest.raises(CommandRefused):
        parse("ivr.holiday", body, **HOLIDAY)


def test_a_json_wrapper_is_read_for_its_status_and_message() -> None:
    """Should the IVR answer JSON, its status and message decide and are quoted."""
    with pytest.raises(CommandRefused) as caught:
        parse("agent.set_available", b'{"status":"Failed","message":"No agent"}', **AGENT_ON)
    assert caught.value.message == "Failed - No agent"
    assert parse("ivr.holiday", b'{"status":"Success"}', **HOLIDAY).message == "Success"


def test_an_echoed_url_in_a_refusal_has_its_credentials_redacted() -> None:
    """An error page quoting the request URL does not carry the apikey or custid on."""
    page = (
        b"<html><head><title>Error in /settings/handler.ashx?apikey=dev-ivr-key&amp;"
        b"custid=dev-customer</title></head><body>Stack trace...</body></html>"
    )
    with pytest.raises(CommandRefused) as caught:
        parse("ivr.holiday", page, status=500, **HOLIDAY)
    assert KEY not in caught.value.message
    assert CUSTOMER not in caught.value.message
    assert "apikey=[redacted]" in caught.value.message
    assert "Stack trace" not in caught.value.message  # the title, not the whole page


# -- the simulated API -----------------------------------------------------------------------


@pytest.fixture
async def ivr() -> AsyncIterator[CallogApi]:
    async with CallogApi() as api:
        yield api


def at(api: CallogApi) -> Target:
    """A target configured from the simulator's own snippet, as a user would paste it."""
    config = msgspec.convert(tomllib.loads(api.snippet())["sources"]["api"], SourceApi)
    return Target(source=SourceConfig(name="ivr", vendor="callog", api=config), now=1.7e9)


async def send(request: HttpRequest) -> HttpAnswer:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method, request.url, headers=list(request.headers), data=request.body
        ) as response,
    ):
        return HttpAnswer(status=response.status, body=await response.read())


async def run(tgt: Target, action: str, **args: Any) -> Result:
    cmd = command(action, **args)
    return ADAPTER.parse(cmd, await send(ADAPTER.build(cmd, tgt)))


def test_snippet_is_a_valid_callog_api_table(ivr: CallogApi) -> None:
    """The pasted [sources.api] table loads and has every key a callog source needs."""
    config = msgspec.convert(tomllib.loads(ivr.snippet())["sources"]["api"], SourceApi)
    assert config.url == ivr.url
    assert config.api_key == KEY
    assert config.customer_id == CUSTOMER
    assert list(api_problems(config, "callog")) == []


async def test_agent_availability_round_trips(ivr: CallogApi) -> None:
    """OFF stops the agent's number taking calls, AVAIL starts it again."""
    off = await run(at(ivr), "agent.set_available", agent="9876543211", available=False)
    assert off.message == "Success"
    assert ivr.available == {"9876543210": True, "9876543211": False}
    await run(at(ivr), "agent.set_available", agent="9876543211", available=True)
    assert ivr.available["9876543211"] is True
    assert [r.query["status"] for r in ivr.actions("ManageAgent")] == ["OFF", "AVAIL"]


async def test_holiday_round_trips(ivr: CallogApi) -> None:
    """A holiday set is kept by date."""
    await run(at(ivr), "ivr.holiday", date="2024-10-02")
    assert ivr.holidays == {"2024-10-02"}
    assert ivr.actions("holiday")[0].method == "GET"


async def test_office_hours_round_trip(ivr: CallogApi) -> None:
    """Office hours arrive decoded as the document's HH:MI AM/PM, per day."""
    await run(at(ivr), "ivr.office_hours", day="Saturday", start="10:00 am", end="2:00 pm")
    assert ivr.office_hours == {"Saturday": ("10:00 AM", "02:00 PM")}


@pytest.mark.parametrize("wrong", [{"api_key": "stolen-key"}, {"customer_id": "someone-else"}])
async def test_a_wrong_key_or_customer_is_refused_without_echoing_it(
    ivr: CallogApi, wrong: dict[str, str]
) -> None:
    """A wrong apikey or custid is refused, nothing changes, and no credential is quoted."""
    tgt = target(url=ivr.url, **wrong)
    with pytest.raises(CommandRefused) as caught:
        await run(tgt, "agent.set_available", agent="9876543210", available=False)
    assert caught.value.message == "Invalid API Key"
    assert ivr.available["9876543210"] is True
    for secret in (KEY, CUSTOMER, *wrong.values()):
        assert secret not in caught.value.message


async def test_an_unknown_agent_is_refused(ivr: CallogApi) -> None:
    """An agent number the account does not have is the IVR's refusal, quoted."""
    with pytest.raises(CommandRefused) as caught:
        await run(at(ivr), "agent.set_available", agent="9000000000", available=True)
    assert caught.value.message == "Invalid Agent Number"
    assert "9000000000" not in ivr.available


async def test_office_hours_ending_before_they_start_are_invalid_time(ivr: CallogApi) -> None:
    """The document's one failure text: Invalid Time, and the day's hours stay unset."""
    with pytest.raises(CommandRefused) as caught:
        await run(at(ivr), "ivr.office_hours", day="Daily", start="06:00 PM", end="09:00 AM")
    assert caught.value.message == "Invalid Time"
    assert ivr.office_hours == {}


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("action=holiday&hdate=2024-02-30", "Invalid Date"),
        ("action=OfficeTime&day=Funday&st_time=09:00%20AM&en_time=05:00%20PM", "Invalid Day"),
        ("action=OfficeTime&day=Daily&st_time=9&en_time=05:00%20PM", "Invalid Time"),
        ("action=ManageAgent&agentnum=9876543210&status=BUSY", "Invalid Status"),
        ("action=managecall", "Invalid Action"),
    ],
)
async def test_requests_the_adapter_never_sends_are_refused(
    ivr: CallogApi, query: str, text: str
) -> None:
    """What the adapter refuses to build, the simulated IVR refuses too (200, plain text)."""
    url = f"{ivr.url}/settings/handler.ashx?apikey={KEY}&custid={CUSTOMER}&{query}"
    answer = await send(HttpRequest(method="GET", url=url))
    assert (answer.status, answer.text) == (200, text)
    with pytest.raises(CommandRefused):
        ADAPTER.parse(command("ivr.holiday", **HOLIDAY), answer)
    assert ivr.holidays == set()
    assert ivr.office_hours == {}


async def test_a_stalled_ivr_answers_only_when_released(ivr: CallogApi) -> None:
    """While stalled the request is recorded but unanswered; release lets it through."""
    ivr.stall()
    task = asyncio.create_task(run(at(ivr), "ivr.holiday", **HOLIDAY))
    await until(lambda: len(ivr.received) == 1, what="the request arriving")
    # Unstalled, the holiday would be set in the same loop step the request was recorded in.
    assert not task.done()
    assert ivr.holidays == set()
    ivr.release()
    assert (await asyncio.wait_for(task, 10)).message == "Success"
    assert ivr.holidays == {"2024-08-15"}
