"""The API contract: every route is in ``/v1/openapi.json``, and a live daemon's answers match it.

Schemathesis drives every operation that ends (all but the SSE and WebSocket streams, whose
opening bytes are checked here instead) against a real daemon on loopback: several vendor
sources with their own auth, events and calls from the vendors' fixtures, a quarantine entry,
and webhook sinks aimed at a port that refuses connections, so they hold retries and dead
letters.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from bridge.api import openapi
from bridge.api.admin import QUARANTINE_PAGE
from bridge.api.calls import STATES as CALL_STATES
from bridge.api.routes import MAX_SEQ, MAX_TYPE_PATTERNS
from bridge.app import Daemon
from bridge.calls.record import UNANSWERED
from bridge.config import Config
from tests.conftest import base_url, daemon_config, until_true
from tests.fixtureutil import load_fixtures

ADMIN = "openapi-admin-token-0123456789"
READER = "openapi-read-token-0123456789"
CORAL_TOKEN = "coral-shared-token"
ONCALL_USER, ONCALL_PASSWORD = "pbx", "oncall-password"
ONCALL_BASIC = base64.b64encode(f"{ONCALL_USER}:{ONCALL_PASSWORD}".encode()).decode()
SECRET = "whsec_" + base64.b64encode(b"pbx-bridge-test-secret-0123456789").decode()
PAGE_LIMIT_MAX = 500
STREAMS = ("/v1/events/stream", "/v1/ws")  # never end: their opening is tested below


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def bridge_config(data_dir: Path, hook_port: int) -> Config:
    hook = f"http://127.0.0.1:{hook_port}/hook"
    return daemon_config(
        data_dir,
        api={
            "tokens": [ADMIN, {"token": READER, "scopes": ["read"]}],
            "page_limit_max": PAGE_LIMIT_MAX,
        },
        sources=[
            {"name": "coocenter", "vendor": "coocenter", "timezone": "Asia/Shanghai"},
            {"name": "coral", "vendor": "coral", "auth": {"type": "token", "token": CORAL_TOKEN}},
            {
                "name": "oncall",
                "vendor": "oncall",
                "auth": {
                    "type": "digest",
                    "username": ONCALL_USER,
                    "password": ONCALL_PASSWORD,
                    "accept_basic": True,
                },
            },
            {"name": "callog", "vendor": "callog", "timezone": "Asia/Kolkata"},
            # Refuses every address: pushes to it are answered 403.
            {"name": "branch", "vendor": "coocenter", "allow_ips": ["192.0.2.0/24"]},
        ],
        sinks=[
            {"type": "webhook", "name": "crm", "url": hook, "secrets": [SECRET]},
            # One attempt, then the dead-letter list.
            {
                "type": "webhook",
                "name": "dlq",
                "url": hook,
                "secrets": [SECRET],
                "retry_schedule_s": [0],
                "breaker_threshold": 1_000_000,
            },
        ],
    )


@pytest.fixture
async def bridge(tmp_path: Path, refusing_port: int) -> AsyncIterator[Daemon]:
    config = bridge_config(tmp_path / "data", refusing_port)
    # A reload reads the same configuration again: POST /v1/reload succeeds, changing nothing.
    async with Daemon(config, load=lambda: config) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def served(daemon: Daemon, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{base_url(daemon)}/v1/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        spec: dict[str, Any] = await response.json()
        return spec


def conforms(spec: dict[str, Any], schema: str, instance: object) -> None:
    """Raise unless ``instance`` is valid against the spec's ``components/schemas/<schema>``."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


async def push_fixtures(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    """Every vendor's fixtures, each to the source named after its vendor, as the PBX sends."""
    url = base_url(daemon)
    auth = {
        "coral": {"headers": {"X-Bridge-Token": CORAL_TOKEN}},
        "oncall": {"headers": {"Authorization": f"Basic {ONCALL_BASIC}"}},
    }
    for vendor in ("coocenter", "coral", "oncall", "callog"):
        for case, fixture in load_fixtures(vendor):
            target = f"{url}/ingest/{vendor}"
            if fixture.get("path"):
                target += f"/{fixture['path']}"
            if "query" in fixture:
                answer = http.get(target, params=fixture["query"], **auth.get(vendor, {}))
            else:
                answer = http.post(target, json=fixture["payload"], **auth.get(vendor, {}))
            async with answer as response:
                assert response.status == 200, (vendor, case, await response.text())


async def seeded(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    """Events, calls, a quarantine entry and dead letters, for the answers to carry real data."""
    await push_fixtures(daemon, http)
    async with http.post(f"{base_url(daemon)}/ingest/coocenter", data=b"{not json") as response:
        assert response.status == 400

    async def dead_letters() -> bool:
        async with http.get(f"{base_url(daemon)}/v1/sinks/dlq/dead", headers=bearer()) as answer:
            return bool((await answer.json())["dead"])

    await until_true(dead_letters, what="dead letters at the refused webhook")


def route_table(daemon: Daemon) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the daemon's app registers; HEAD goes with GET."""
    found = set()
    for route in daemon.web.router.routes():  # the served application's, as they really are
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path is not None, route
        # aiohttp writes a variable's pattern in the path ({tail:.*}); OpenAPI names it only.
        found.add((route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return found


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in methods
    }


async def test_every_registered_route_is_documented(
    bridge: Daemon, http: aiohttp.ClientSession
) -> None:
    """The spec has an operation for each method and path the app serves, and no others."""
    spec = await served(bridge, http)
    registered = route_table(bridge)
    assert registered - operations(spec) == set(), "undocumented: add them to api/openapi.json"
    assert operations(spec) - registered == set(), "documented but not served"


async def test_the_document_needs_no_token_and_is_openapi_3_1(
    bridge: Daemon, http: aiohttp.ClientSession
) -> None:
    """Served without a token, as built for this config, with every reference resolvable."""
    spec = await served(bridge, http)
    assert spec["openapi"].startswith("3.1.")
    assert spec == openapi.document(PAGE_LIMIT_MAX)
    text = json.dumps(spec)
    for target in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = spec
        for part in target.split("/"):
            node = node[part]  # a KeyError names the dangling reference
    assert "$defs" not in text
    assert "x-bound" not in text


def test_the_documents_bounds_are_the_codes() -> None:
    """Seqs, the type-pattern cap, call states, page sizes: the numbers the handlers enforce."""
    spec = openapi.document(PAGE_LIMIT_MAX)
    schemas, parameters = spec["components"]["schemas"], spec["components"]["parameters"]
    assert schemas["Seq"]["maximum"] == MAX_SEQ == schemas["PositiveSeq"]["maximum"]
    assert parameters["Types"]["schema"]["maxItems"] == MAX_TYPE_PATTERNS
    calls = spec["paths"]["/v1/calls"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in calls if "name" in p}
    assert by_name["state"]["enum"] == list(CALL_STATES)
    assert schemas["Call"]["properties"]["state"]["enum"] == list(CALL_STATES[:-1])
    assert by_name["limit"]["maximum"] == PAGE_LIMIT_MAX
    disposition = schemas["Call"]["properties"]["disposition"]["enum"]
    assert set(disposition) == {"answered", *UNANSWERED}
    events = spec["paths"]["/v1/events"]["get"]["parameters"]
    assert [p["schema"]["maximum"] for p in events if p.get("name") == "limit"] == [PAGE_LIMIT_MAX]
    quarantine = spec["paths"]["/v1/quarantine"]["get"]["parameters"]
    assert [p["schema"]["maximum"] for p in quarantine if p["name"] == "limit"] == [QUARANTINE_PAGE]


def narrowed(spec: dict[str, Any], names: dict[str, list[Any]]) -> dict[str, Any]:
    """The spec with these path parameters narrowed to what exists in this daemon.

    Positive cases then reach the handlers (a real source's auth and payload checks, a real
    sink's dead letters) instead of a 404; negative ones still try every other value. What is
    answered is checked against the same documented responses.
    """
    spec = copy.deepcopy(spec)
    parameters = [*spec["components"]["parameters"].values()]
    for item in spec["paths"].values():
        for operation in item.values():
            parameters.extend(operation.get("parameters", []))
    for parameter in parameters:
        values = names.get(parameter.get("name", "")) if parameter.get("in") == "path" else None
        if values:
            parameter.pop("example", None)
            parameter["schema"] = {"enum": values}
    return spec


async def test_a_live_daemon_answers_as_documented(
    bridge: Daemon, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Schemathesis, as admin: no 5xx; every status, content type and body as documented."""
    await seeded(bridge, http)
    url = base_url(bridge)
    async with http.get(f"{url}/v1/calls", headers=bearer()) as response:
        call = (await response.json())["calls"][0]
    async with http.get(f"{url}/v1/quarantine?state=all", headers=bearer()) as response:
        entry = (await response.json())["entries"][0]
    spec = narrowed(
        await served(bridge, http),
        {
            "source": ["coocenter", "coral", "oncall", "callog", "branch"],
            "key": [call["call_key"]],
            "name": ["dlq", "crm"],
            "id": [entry["id"]],
        },
    )
    location = tmp_path / "openapi.json"
    location.write_text(json.dumps(spec))
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(location),
        "--url",
        url,
        "--header",
        f"Authorization: Bearer {ADMIN}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance,ignored_auth",
        *(arg for path in STREAMS for arg in ("--exclude-path", path)),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "20",
        "--workers",
        "1",
        "--seed",
        "20240501",
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(110):
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-12000:]
    # Every operation but the streams was run.
    tested = len(operations(spec)) - len(STREAMS)
    assert re.search(rf"^\s*Tested: {tested}$", report, re.MULTILINE), report[-4000:]


async def first_event(response: aiohttp.ClientResponse) -> tuple[int, bytes]:
    """The seq and body of the first ``id:``/``data:`` record of an event stream."""
    seq, data = None, None
    async with asyncio.timeout(10):
        while data is None or seq is None:
            line = (await response.content.readline()).rstrip(b"\n")
            if line.startswith(b"id: "):
                seq = int(line[4:])
            elif line.startswith(b"data: "):
                data = line[6:]
    return seq, data


async def test_sse_opens_as_documented(bridge: Daemon, http: aiohttp.ClientSession) -> None:
    """200 text/event-stream, and each record's data is a documented Event with its seq."""
    await push_fixtures(bridge, http)
    spec = await served(bridge, http)
    content = spec["paths"]["/v1/events/stream"]["get"]["responses"]["200"]["content"]
    url = f"{base_url(bridge)}/v1/events/stream?after=0"
    async with http.get(url, headers=bearer(READER)) as response:
        assert response.status == 200
        assert response.content_type in content
        seq, data = await first_event(response)
    event = json.loads(data)
    conforms(spec, "Event", event)
    assert event["seq"] == seq == 1


async def test_websocket_opens_as_documented(bridge: Daemon, http: aiohttp.ClientSession) -> None:
    """101 with the token in the query (as a browser sends it); text frames of documented Events."""
    await push_fixtures(bridge, http)
    spec = await served(bridge, http)
    assert "101" in spec["paths"]["/v1/ws"]["get"]["responses"]
    url = f"{base_url(bridge)}/v1/ws?after=0&access_token={READER}"
    async with http.ws_connect(url) as ws:
        message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.TEXT
    event = json.loads(message.data)
    conforms(spec, "Event", event)
    assert event["seq"] == 1


async def test_a_websocket_without_a_handshake_is_refused_as_documented(
    bridge: Daemon, http: aiohttp.ClientSession
) -> None:
    """A plain GET of /v1/ws: 400 invalid_handshake in the JSON error, not aiohttp's text."""
    spec = await served(bridge, http)
    async with http.get(f"{base_url(bridge)}/v1/ws", headers=bearer()) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    conforms(spec, "Error", body)
    assert body["error"] == "invalid_handshake"


@pytest.mark.parametrize("path", STREAMS)
async def test_streams_refuse_as_documented(
    bridge: Daemon, http: aiohttp.ClientSession, path: str
) -> None:
    """No token: 401 with the challenge; a bad resume point: 400 naming the field."""
    spec = await served(bridge, http)
    responses = spec["paths"][path]["get"]["responses"]
    assert {"401", "403", "400"} <= set(responses)
    async with http.get(f"{base_url(bridge)}{path}") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        conforms(spec, "Error", await response.json())
    async with http.get(f"{base_url(bridge)}{path}?after=x", headers=bearer()) as response:
        assert response.status == 400
        body = await response.json()
    conforms(spec, "Error", body)
    assert body["field"] == "after"


async def test_a_read_token_is_refused_admin_as_documented(
    bridge: Daemon, http: aiohttp.ClientSession
) -> None:
    """403 forbidden naming the missing scope, the body the spec gives every admin operation."""
    spec = await served(bridge, http)
    async with http.get(f"{base_url(bridge)}/v1/quarantine", headers=bearer(READER)) as response:
        assert response.status == 403
        body = await response.json()
    conforms(spec, "Forbidden", body)
    assert body["scope"] == "admin"
    assert spec["paths"]["/v1/quarantine"]["get"]["security"][0] == {"bearer": ["admin"]}


async def test_a_full_quarantine_is_refused_as_documented(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """503 quarantine_full with Retry-After and the caps, as the spec's ingest 503 says."""
    config = daemon_config(
        tmp_path / "data",
        sources=[{"name": "hq", "vendor": "coocenter", "quarantine_max_entries": 1}],
    )
    async with Daemon(config) as daemon:
        spec = await served(daemon, http)
        url = f"{base_url(daemon)}/ingest/hq"
        async with http.post(url, data=b"{first") as response:
            assert response.status == 400
            conforms(spec, "IngestError", await response.json())
        async with http.post(url, data=b"{second") as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) > 0
            body = await response.json()
    conforms(spec, "IngestError", body)
    assert body["error"] == "quarantine_full"
    assert body["max_entries"] == 1
    documented = spec["components"]["responses"]["NotCommitted"]
    assert documented["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize(
    ("path", "code"),
    [("/ingest/coocenter/a%0Ab", "invalid_payload"), ("/v1/calls/coocenter/a%0Ab", "unknown_call")],
)
async def test_a_newline_in_a_path_tail_reaches_the_handler(
    bridge: Daemon, http: aiohttp.ClientSession, path: str, code: str
) -> None:
    """A tail or call key holding %0A gets the handler's JSON answer, not aiohttp's text 404."""
    spec = await served(bridge, http)
    method = http.post if path.startswith("/ingest") else http.get
    async with method(f"{base_url(bridge)}{path}", headers=bearer()) as response:
        assert response.content_type == "application/json"
        body = await response.json()
    conforms(spec, "Error", body)
    assert body["error"] == code
