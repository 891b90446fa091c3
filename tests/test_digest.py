"""HTTP Digest (RFC 7616) on the ingest side, against real clients: curl and aiohttp."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.errors import AuthError
from bridge.sources.digest import DigestAuth, parse_params
from tests.conftest import base_url, daemon_config

USER, PASSWORD = "pbx", "s3cret-pw"
# Digest is what a PortSIP (OnCall) PBX sends: an extension registration, one event each.
PUSH = {
    "event_type": "extension_register",
    "extension": "sip:808@pbx.test",
    "registration_contacts": [{"contact_uri": "<sip:808@127.0.0.1:5060>", "expires": 60}],
}


def digest_source(**extra: Any) -> list[dict[str, Any]]:
    auth = {"type": "digest", "username": USER, "password": PASSWORD, **extra}
    return [{"name": "pbx", "vendor": "oncall", "auth": auth}]


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    async with Daemon(daemon_config(tmp_path, sources=digest_source())) as running:
        yield running


def answer(challenge: str, *, method: str, uri: str, nc: int = 1, password: str = PASSWORD) -> str:
    """A client's Authorization value for a challenge (written from RFC 7616 3.4.1)."""
    params = parse_params(challenge.removeprefix("Digest "))
    algorithm = params["algorithm"]
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

    def digest(*parts: str) -> str:
        return h(":".join(parts).encode()).hexdigest()

    cnonce, count = "0a4f113b", f"{nc:08x}"
    ha1 = digest(USER, params["realm"], password)
    response = digest(ha1, params["nonce"], count, cnonce, "auth", digest(method, uri))
    return (
        f'Digest username="{USER}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", algorithm={algorithm}, qop=auth, nc={count}, cnonce="{cnonce}", '
        f'response="{response}", opaque="{params["opaque"]}"'
    )


async def curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return int(out or 0), err.decode()


async def test_curl_digest_is_accepted(daemon: Daemon) -> None:
    """`curl --digest` authenticates and its push is committed."""
    status, err = await curl(
        "--digest",
        "-u",
        f"{USER}:{PASSWORD}",
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(PUSH),
        base_url(daemon) + "/ingest/pbx",
    )
    assert status == 200, err
    assert daemon.writer.last_seq == 1


async def test_curl_digest_with_a_wrong_password_is_refused(daemon: Daemon) -> None:
    """A wrong password gets 401 and nothing is stored."""
    status, _ = await curl(
        "--digest",
        "-u",
        f"{USER}:nope",
        "--data",
        json.dumps(PUSH),
        base_url(daemon) + "/ingest/pbx",
    )
    assert status == 401
    assert daemon.writer.last_seq == 0


async def test_aiohttp_digest_middleware_is_accepted(daemon: Daemon) -> None:
    """aiohttp's own DigestAuthMiddleware authenticates (SHA-256, offered first)."""
    middleware = aiohttp.DigestAuthMiddleware(USER, PASSWORD)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as http:
        for n in range(3):  # one challenge, then the nonce count rises
            push = {**PUSH, "extension": f"sip:{800 + n}@pbx.test"}
            async with http.post(base_url(daemon) + "/ingest/pbx", json=push) as response:
                assert response.status == 200
    assert daemon.writer.last_seq == 3


async def test_challenge_offers_sha256_then_md5(daemon: Daemon) -> None:
    """Unauthenticated: 401 with one Digest challenge per algorithm, SHA-256 first."""
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url(daemon) + "/ingest/pbx", json=PUSH) as response:
            assert response.status == 401
            challenges = response.headers.getall("WWW-Authenticate")
    assert [parse_params(c.removeprefix("Digest "))["algorithm"] for c in challenges] == [
        "SHA-256",
        "MD5",
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["sha256", "md5"])
async def test_replayed_credentials_are_refused_with_a_fresh_challenge(
    daemon: Daemon, index: int
) -> None:
    """The same nonce count twice is a replay: 401 and a new challenge, nothing stored twice."""
    url = base_url(daemon) + "/ingest/pbx"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=PUSH) as response:
            challenge = response.headers.getall("WWW-Authenticate")[index]
        header = answer(challenge, method="POST", uri="/ingest/pbx")
        async with http.post(url, json=PUSH, headers={"Authorization": header}) as response:
            assert response.status == 200
        async with http.post(url, json=PUSH, headers={"Authorization": header}) as response:
            assert response.status == 401
            fresh = response.headers.getall("WWW-Authenticate")[0]
    assert (
        parse_params(fresh.removeprefix("Digest "))["nonce"]
        != parse_params(challenge.removeprefix("Digest "))["nonce"]
    )


async def test_credentials_for_another_uri_are_refused(daemon: Daemon) -> None:
    """A response computed for another request-target does not authenticate this one."""
    url = base_url(daemon) + "/ingest/pbx"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=PUSH) as response:
            challenge = response.headers["WWW-Authenticate"]
        header = answer(challenge, method="POST", uri="/ingest/other")
        async with http.post(url, json=PUSH, headers={"Authorization": header}) as response:
            assert response.status == 401


class Req:
    def __init__(self, authorization: str = "") -> None:
        self.headers = {"Authorization": authorization} if authorization else {}
        self.query: dict[str, str] = {}
        self.method = "POST"
        self.path_qs = "/ingest/oncall"


def test_expired_nonce_is_stale() -> None:
    """Right credentials on an expired nonce: refused with stale=true, so clients retry."""
    now = [1000.0]
    auth = DigestAuth(
        username=USER, password=PASSWORD, realm="r", nonce_ttl_s=60, clock=lambda: now[0]
    )
    challenge = auth.challenges()[0]
    header = answer(challenge, method="POST", uri="/ingest/oncall")
    auth.check(Req(header))
    now[0] += 61
    with pytest.raises(AuthError) as caught:
        auth.check(Req(answer(challenge, method="POST", uri="/ingest/oncall", nc=2)))
    assert caught.value.reason == "nonce expired"
    assert all("stale=true" in c for c in caught.value.challenges)


def test_wrong_password_is_not_stale() -> None:
    """A wrong password on an expired nonce is just wrong (no stale hint)."""
    now = [1000.0]
    auth = DigestAuth(
        username=USER, password=PASSWORD, realm="r", nonce_ttl_s=60, clock=lambda: now[0]
    )
    challenge = auth.challenges()[0]
    now[0] += 61
    with pytest.raises(AuthError) as caught:
        auth.check(Req(answer(challenge, method="POST", uri="/ingest/oncall", password="x")))
    assert not any("stale" in c for c in caught.value.challenges)


def test_forged_nonce_is_refused() -> None:
    """A nonce this server did not sign is refused."""
    auth = DigestAuth(username=USER, password=PASSWORD, realm="r")
    other = DigestAuth(username=USER, password=PASSWORD, realm="r")
    header = answer(other.challenges()[0], method="POST", uri="/ingest/oncall")
    with pytest.raises(AuthError, match="unknown nonce"):
        auth.check(Req(header))


async def test_basic_is_accepted_next_to_digest_when_enabled(tmp_path: Path) -> None:
    """accept_basic: Basic credentials work too, and the 401 offers both schemes."""
    config = daemon_config(tmp_path, sources=digest_source(accept_basic=True))
    async with Daemon(config) as daemon, aiohttp.ClientSession() as http:
        url = base_url(daemon) + "/ingest/pbx"
        async with http.post(url, json=PUSH) as response:
            schemes = [c.split()[0] for c in response.headers.getall("WWW-Authenticate")]
        assert schemes == ["Digest", "Digest", "Basic"]
        for password, status in ((PASSWORD, 200), ("no", 401)):
            basic = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
            async with http.post(url, json=PUSH, headers={"Authorization": basic}) as response:
                assert response.status == status


def test_out_of_order_nonce_counts_are_accepted_once_each() -> None:
    """Concurrent requests on one nonce may arrive out of order: each nc is good once."""
    auth = DigestAuth(username=USER, password=PASSWORD, realm="r")
    challenge = auth.challenges()[0]
    for nc in (2, 1, 3):
        auth.check(Req(answer(challenge, method="POST", uri="/ingest/oncall", nc=nc)))
    with pytest.raises(AuthError, match="replayed"):
        auth.check(Req(answer(challenge, method="POST", uri="/ingest/oncall", nc=1)))


async def test_stale_nonce_gets_401_with_stale_true(tmp_path: Path) -> None:
    """Over HTTP: right credentials on an expired nonce are answered 401 with stale=true."""
    config = daemon_config(tmp_path, sources=digest_source(nonce_ttl_s=1e-9))  # expired at once
    async with Daemon(config) as daemon, aiohttp.ClientSession() as http:
        url = base_url(daemon) + "/ingest/pbx"
        async with http.post(url, json=PUSH) as response:
            challenge = response.headers["WWW-Authenticate"]
        header = answer(challenge, method="POST", uri="/ingest/pbx")
        async with http.post(url, json=PUSH, headers={"Authorization": header}) as response:
            assert response.status == 401
            assert all("stale=true" in c for c in response.headers.getall("WWW-Authenticate"))
        assert daemon.writer.last_seq == 0
