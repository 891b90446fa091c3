"""Call Control Manager provisioning: the adapter against the document, and the simulated API."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import msgspec
import pytest

from bridge.commands import actions
from bridge.commands.ccm import ADAPTER
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.config import Provisioning, SourceConfig
from bridge.errors import CommandInvalid, CommandRefused, SessionExpired
from bridge.simulate.ccm_api import CcmApi
from tests.conftest import until

ENDPOINT = "http://127.0.0.1:18001/api.aspx"
KEY = "dev-ccm-key"


def target(url: str = ENDPOINT, security_key: str = KEY) -> Target:
    prov = Provisioning(url=url, security_key=security_key)
    source = SourceConfig(name="office", vendor="coocenter", provisioning=prov)
    return Target(source=source, now=1.7e9)


def command(action: str, **args: Any) -> Command:
    """A command as the service hands it over: checked and defaulted by the catalogue."""
    checked = actions.check(ADAPTER.actions[action], args)
    return Command(source="office", action=action, args=checked)


def build(action: str, tgt: Target | None = None, /, **args: Any) -> HttpRequest:
    return ADAPTER.build(command(action, **args), tgt or target())


def query(request: HttpRequest) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(request.url).query, keep_blank_values=True)


def qs_value(request: HttpRequest) -> Any:
    return json.loads(dict(query(request))["qsValue"])


def parse(action: str, body: bytes, *, status: int = 200, **args: Any) -> Result:
    answer = HttpAnswer(status=status, headers={"content-type": "application/json"}, body=body)
    return ADAPTER.parse(command(action, **args), answer)


ADD: dict[str, Any] = {"operation": "add", "extension": "201", "first_name": "Asha"}
FULL: dict[str, Any] = ADD | {
    "last_name": "Rao",
    "email": "asha@example.test",
    "caller_id": "0801234567",
}
CONTACT: dict[str, Any] = {"first_name": "Ravi", "last_name": "Kumar", "phone": "9876500000"}

# -- requests --------------------------------------------------------------------------------


def test_adding_an_extension_is_the_documents_post_url_byte_for_byte() -> None:
    """action, qstype=1, qsSecuritykey, qsValue in the URL of a POST with no body."""
    request = build("extension.provision", **ADD)
    assert request.method == "POST"
    assert request.body == b""
    assert request.url == (
        "http://127.0.0.1:18001/api.aspx?action=addExt&qstype=1&qsSecuritykey=dev-ccm-key"
        "&qsValue=%7B%22sExtension%22%3A%5B%7B%22ExtentionNumber%22%3A%22201%22%2C"
        "%22EmailAddress%22%3A%22%22%2C%22FirstName%22%3A%22Asha%22%2C%22LastName%22%3A%22%22"
        "%2C%22OutboundCallerID%22%3A%22%22%7D%5D%7D"
    )


def test_every_field_maps_to_the_documents_name_in_its_order() -> None:
    """email, first/last name and caller_id fill the document's keys, in its order."""
    value = qs_value(build("extension.provision", **FULL))
    assert list(value["sExtension"][0].items()) == [
        ("ExtentionNumber", "201"),
        ("EmailAddress", "asha@example.test"),
        ("FirstName", "Asha"),
        ("LastName", "Rao"),
        ("OutboundCallerID", "0801234567"),
    ]


def test_updating_is_update_ext_with_u_extension() -> None:
    """update: action=updateExt and the record under uExtension."""
    request = build("extension.provision", **(FULL | {"operation": "update"}))
    assert [key for key, _ in query(request)] == ["action", "qstype", "qsSecuritykey", "qsValue"]
    assert dict(query(request))["action"] == "updateExt"
    assert qs_value(request)["uExtension"][0]["FirstName"] == "Asha"


def test_deleting_sends_only_the_extension_number() -> None:
    """delete: action=deleteExt, dExtension holding the one required field, nothing else."""
    request = build("extension.provision", **(FULL | {"operation": "delete"}))
    assert dict(query(request))["action"] == "deleteExt"
    assert qs_value(request) == {"dExtension": [{"ExtentionNumber": "201"}]}


def test_delete_needs_no_first_name() -> None:
    """A delete names only the extension."""
    request = build("extension.provision", operation="delete", extension="201")
    assert qs_value(request) == {"dExtension": [{"ExtentionNumber": "201"}]}


@pytest.mark.parametrize("operation", ["add", "update"])
def test_add_and_update_without_a_first_name_are_refused(operation: str) -> None:
    """FirstName is required for add and update: refused naming args.first_name."""
    with pytest.raises(CommandInvalid) as caught:
        build("extension.provision", operation=operation, extension="201")
    assert caught.value.field == "args.first_name"


def test_phonebook_add_is_add_phonebook_with_s_contact() -> None:
    """A contact: action=addPhonebook, sContact with the document's keys, company empty."""
    request = build("phonebook.add", **CONTACT)
    assert dict(query(request))["action"] == "addPhonebook"
    assert qs_value(request) == {
        "sContact": [
            {
                "FirstName": "Ravi",
                "LastName": "Kumar",
                "PhoneNumber": "9876500000",
                "CompanyName": "",
            }
        ]
    }
    with_company = build("phonebook.add", **(CONTACT | {"company": "Acme"}))
    assert qs_value(with_company)["sContact"][0]["CompanyName"] == "Acme"


def test_phonebook_add_needs_a_last_name() -> None:
    """The document marks the contact's LastName required."""
    with pytest.raises(CommandInvalid) as caught:
        command("phonebook.add", first_name="Ravi", phone="9876500000")
    assert caught.value.field == "args.last_name"


def test_the_key_and_json_are_encoded_so_nothing_can_add_a_parameter() -> None:
    """& and = in the key or a name stay inside their values; non-ASCII travels as UTF-8."""
    request = build(
        "extension.provision",
        target(security_key="k&action=deleteExt"),
        **FULL | {"first_name": "José&qstype=2"},
    )
    params = query(request)
    assert [key for key, _ in params] == ["action", "qstype", "qsSecuritykey", "qsValue"]
    assert dict(params)["qsSecuritykey"] == "k&action=deleteExt"
    assert qs_value(request)["sExtension"][0]["FirstName"] == "José&qstype=2"
    assert "%C3%A9" in request.url


def test_an_address_with_a_query_gets_the_parameters_appended() -> None:
    """A url that already has a query is continued with &."""
    request = build("extension.provision", target(url=f"{ENDPOINT}?tenant=7"), **ADD)
    assert request.url.startswith(f"{ENDPOINT}?tenant=7&action=addExt&qstype=1&")


# -- answers: the document's, as printed -----------------------------------------------------


@pytest.mark.parametrize(
    ("action", "args", "status"),
    [
        ("extension.provision", ADD, "Extension Created"),
        ("extension.provision", ADD | {"operation": "update"}, "Extension Updated"),
        ("extension.provision", {"operation": "delete", "extension": "201"}, "Extension Deleted"),
        ("phonebook.add", CONTACT, "Contact Created"),
    ],
)
def test_the_documents_success_answers_are_results(
    action: str, args: dict[str, Any], status: str
) -> None:
    """{"status": ..., "errorMessage": "", "errorCode": ""} is done; its status the message."""
    body = json.dumps({"status": status, "errorMessage": "", "errorCode": ""}).encode()
    result = parse(action, body, **args)
    assert result.message == status
    assert result.data == (
        {"phone": "9876500000"}
        if action == "phonebook.add"
        else {"operation": args["operation"], "extension": "201"}
    )


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            "{“message”:”Authentication Token invalid”, “errorCode”:”INVALID_AUTH_ID”}",
            "Authentication Token invalid",
            "INVALID_AUTH_ID",
        ),
        ("{“message”:”Internal Server error”, “errorCode”:”500″}", "Internal Server error", "500"),
        (
            "{“message”:”* Exception Detail”, “errorCode”:” WEBSERVICE_ERROR “}",
            "* Exception Detail",
            "WEBSERVICE_ERROR",
        ),
        (
            '{"message":"Authentication Token expired", "errorCode":"AUTH_ID_EXPIRED"}',
            "Authentication Token expired",
            "AUTH_ID_EXPIRED",
        ),
        (
            '{"message":"Extension number already exist", "errorCode":"EXTENSION_EXIST"}',
            "Extension number already exist",
            "EXTENSION_EXIST",
        ),
    ],
)
def test_the_documents_failures_are_refusals_with_their_code(
    body: str, message: str, code: str
) -> None:
    """Each printed failure (smart quotes and stray spaces too) is refused with its own code."""
    with pytest.raises(CommandRefused) as caught:
        parse("extension.provision", body.encode(), **ADD)
    assert (caught.value.message, caught.value.vendor_code) == (message, code)
    assert not isinstance(caught.value, SessionExpired)  # a configured key: nothing to renew


def test_an_http_error_with_the_json_is_refused_with_its_status() -> None:
    """A 500 carrying the error JSON keeps both its code and the HTTP status."""
    body = b'{"message":"Internal Server error","errorCode":"500"}'
    with pytest.raises(CommandRefused) as caught:
        parse("extension.provision", body, status=500, **ADD)
    assert (caught.value.vendor_code, caught.value.status) == ("500", 500)


def test_a_200_without_a_status_is_refused_with_its_error_message() -> None:
    """No status and an errorMessage is not a success."""
    body = b'{"status":"","errorMessage":"Invalid First name","errorCode":""}'
    with pytest.raises(CommandRefused) as caught:
        parse("extension.provision", body, **ADD)
    assert caught.value.message == "Invalid First name"


def test_a_page_echoing_the_security_key_is_redacted() -> None:
    """A non-JSON error page quoting the URL does not carry the security key on."""
    page = b"<h1>Runtime Error</h1> /api.aspx?action=addExt&qstype=1&qsSecuritykey=dev-ccm-key"
    with pytest.raises(CommandRefused) as caught:
        parse("extension.provision", page, status=500, **ADD)
    assert KEY not in caught.value.message
    assert "qsSecuritykey=[redacted]" in caught.value.message


# -- the simulated manager -------------------------------------------------------------------


@pytest.fixture
async def ccm() -> AsyncIterator[CcmApi]:
    async with CcmApi() as api:
        yield api


def at(api: CcmApi) -> Target:
    """A target configured from the simulator's own snippet, as a user would paste it."""
    table = tomllib.loads(api.snippet())["sources"]["provisioning"]
    prov = msgspec.convert(table, Provisioning)
    return Target(source=SourceConfig(name="office", vendor="coocenter", provisioning=prov), now=1)


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


async def refused(tgt: Target, action: str, **args: Any) -> CommandRefused:
    with pytest.raises(CommandRefused) as caught:
        await run(tgt, action, **args)
    return caught.value


def test_snippet_is_the_provisioning_table(ccm: CcmApi) -> None:
    """The pasted [sources.provisioning] table is the full api.aspx address and the key."""
    assert ccm.snippet() == (
        f'[sources.provisioning]\nurl = "{ccm.url}/api.aspx"\nsecurity_key = "dev-ccm-key"\n'
    )


async def test_an_extension_is_added_updated_and_deleted(ccm: CcmApi) -> None:
    """Each operation round-trips and changes the manager's extensions."""
    tgt = at(ccm)
    assert (await run(tgt, "extension.provision", **FULL)).message == "Extension Created"
    assert ccm.extensions["201"]["EmailAddress"] == "asha@example.test"
    update = FULL | {"operation": "update", "first_name": "Asha R"}
    assert (await run(tgt, "extension.provision", **update)).message == "Extension Updated"
    assert ccm.extensions["201"]["FirstName"] == "Asha R"
    delete = {"operation": "delete", "extension": "201"}
    assert (await run(tgt, "extension.provision", **delete)).message == "Extension Deleted"
    assert ccm.extensions == {}
    assert [r.action for r in ccm.received] == ["addExt", "updateExt", "deleteExt"]
    assert all(r.method == "POST" and r.body == b"" for r in ccm.received)


async def test_a_contact_is_added_to_the_phonebook(ccm: CcmApi) -> None:
    """phonebook.add round-trips into the manager's phonebook."""
    result = await run(at(ccm), "phonebook.add", **(CONTACT | {"company": "Acme"}))
    assert result.message == "Contact Created"
    assert ccm.phonebook["9876500000"]["CompanyName"] == "Acme"


async def test_adding_an_existing_extension_is_a_webservice_error(ccm: CcmApi) -> None:
    """A second add of the same number is refused and the first record stays."""
    await run(at(ccm), "extension.provision", **ADD)
    error = await refused(at(ccm), "extension.provision", **(ADD | {"first_name": "Other"}))
    assert (error.vendor_code, error.message) == (
        "WEBSERVICE_ERROR",
        "Extension number already exist",
    )
    assert ccm.extensions["201"]["FirstName"] == "Asha"


@pytest.mark.parametrize("operation", ["update", "delete"])
async def test_updating_or_deleting_a_missing_extension_is_refused(
    ccm: CcmApi, operation: str
) -> None:
    """The document's "Extension number does not exit", its code stripped of stray spaces."""
    error = await refused(at(ccm), "extension.provision", **(ADD | {"operation": operation}))
    assert (error.vendor_code, error.message) == (
        "WEBSERVICE_ERROR",
        "Extension number does not exit",
    )


async def test_a_wrong_security_key_is_invalid_auth_id_and_not_quoted(ccm: CcmApi) -> None:
    """A wrong key changes nothing and neither key appears in the refusal."""
    error = await refused(
        target(url=ccm.endpoint, security_key="stolen"), "extension.provision", **ADD
    )
    assert (error.vendor_code, error.message) == ("INVALID_AUTH_ID", "Authentication Token invalid")
    assert "stolen" not in error.message
    assert KEY not in error.message
    assert ccm.extensions == {}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (ADD | {"extension": "20A"}, "INVALID_EXTENSION"),
        (ADD | {"email": "not-an-address"}, "INVALID_EMAIL"),
        (ADD | {"operation": "update", "email": "a@b"}, "INVALID_EMAIL"),
    ],
)
async def test_the_managers_field_checks_are_refusals(
    ccm: CcmApi, args: dict[str, str], code: str
) -> None:
    """The document's Error Handling codes for a bad extension number or e-mail."""
    error = await refused(at(ccm), "extension.provision", **args)
    assert error.vendor_code == code
    assert ccm.extensions == {}


async def test_an_empty_first_name_is_fname_invalid(ccm: CcmApi) -> None:
    """A client that sends FirstName "" (the catalogue never would) gets FNAME_INVALID."""
    value = quote(json.dumps({"sExtension": [{"ExtentionNumber": "201", "FirstName": ""}]}))
    error = await refused_raw(
        f"{ccm.endpoint}?action=addExt&qstype=1&qsSecuritykey={KEY}&qsValue={value}"
    )
    assert error.vendor_code == "FNAME_INVALID"
    assert ccm.extensions == {}


async def test_qs_value_that_is_not_json_is_an_internal_server_error(ccm: CcmApi) -> None:
    """Broken JSON is the document's 500, as HTTP 500 too."""
    url = f"{ccm.endpoint}?action=addExt&qstype=1&qsSecuritykey={KEY}&qsValue=%7Bnot%20json"
    error = await refused_raw(url)
    assert (error.vendor_code, error.status) == ("500", 500)


async def test_an_unknown_action_is_a_webservice_error(ccm: CcmApi) -> None:
    """Only the actions it knows are served."""
    url = f"{ccm.endpoint}?action=dropAll&qstype=1&qsSecuritykey={KEY}&qsValue=%7B%7D"
    error = await refused_raw(url)
    assert error.vendor_code == "WEBSERVICE_ERROR"


async def refused_raw(url: str) -> CommandRefused:
    answer = await send(HttpRequest(method="POST", url=url))
    with pytest.raises(CommandRefused) as caught:
        ADAPTER.parse(command("extension.provision", **ADD), answer)
    return caught.value


async def test_a_stalled_manager_answers_only_when_released(ccm: CcmApi) -> None:
    """While stalled the add is recorded but not carried out; release lets it through."""
    ccm.stall()
    task = asyncio.create_task(run(at(ccm), "extension.provision", **ADD))
    await until(lambda: len(ccm.received) == 1, what="the add arriving")
    # Unstalled, the extension would exist in the same loop step the request was recorded in.
    assert not task.done()
    assert ccm.extensions == {}
    ccm.release()
    assert (await asyncio.wait_for(task, 10)).message == "Extension Created"
    assert "201" in ccm.extensions
