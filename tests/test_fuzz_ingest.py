"""10,000 generated bad requests against a running daemon: never a 5xx, and it stays up."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp

from bridge.app import Daemon
from bridge.config import IMPLEMENTED_VENDORS
from tests.conftest import base_url, daemon_config
from tests.fixtureutil import load_fixtures

TOTAL = 10_000
JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    1e308,
    "",
    " ",
    "0000-00-00 00:00:00",
    "9999-12-31 23:59:59",
    "NaN",
    "sip:",
    "<>",
    "\x00",
    "\ud7ff" * 3,
    [],
    {},
    [None],
    {"": ""},
    "1" * 500,
]


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """A plausible-looking but wrong version of a vendor payload."""
    if isinstance(value, dict) and value:
        out = dict(value)
        for key in rng.sample(sorted(out), k=rng.randint(1, min(3, len(out)))):
            choice = rng.random()
            if choice < 0.3:
                del out[key]
            elif choice < 0.8:
                out[key] = rng.choice(JUNK)
            else:
                out[key] = mutate(out[key], rng, depth + 1)
        if rng.random() < 0.2:
            out[rng.choice(["extra", "EVENT", "Event", "event_type"])] = rng.choice(JUNK)
        return out
    if isinstance(value, list) and value:
        return [mutate(item, rng, depth + 1) for item in value] + rng.sample(JUNK, 2)
    return rng.choice(JUNK)


def bad_request(rng: random.Random, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One request: a mutated sample, a broken body, or a bad query, to a random source."""
    vendor = rng.choice(IMPLEMENTED_VENDORS)
    url_path = f"/ingest/{vendor}" + rng.choice(["", "/", "/x", "/cdrevent", "/%00", "/a/b/c"])
    fixture = rng.choice([s for s in samples if s["source"]["vendor"] == vendor] or samples)
    kind = rng.random()
    if kind < 0.5 and "payload" in fixture:
        body = json.dumps(mutate(fixture["payload"], rng)).encode()
        return {"method": "POST", "path": url_path, "data": body, "params": {}}
    if kind < 0.65:
        query = {k: str(mutate(v, rng)) for k, v in (fixture.get("query") or {"a": "b"}).items()}
        return {"method": "GET", "path": url_path, "data": None, "params": query}
    if kind < 0.8:
        good = json.dumps(fixture.get("payload", {})).encode()
        return {
            "method": "POST",
            "path": url_path,
            "data": good[: rng.randint(0, len(good))],
            "params": {},
        }
    body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    return {"method": rng.choice(["POST", "GET"]), "path": url_path, "data": body, "params": {}}


async def test_ten_thousand_bad_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """Every generated bad request is answered below 500 and the daemon stays ready."""
    samples = [
        {**fixture, "source": {**fixture["source"], "vendor": vendor}}
        for vendor in IMPLEMENTED_VENDORS
        for _, fixture in load_fixtures(vendor)
    ]
    sources = [{"name": vendor, "vendor": vendor} for vendor in IMPLEMENTED_VENDORS]
    rng = random.Random(2026)
    statuses: dict[int, int] = {}
    async with Daemon(daemon_config(tmp_path, sources=sources)) as daemon:
        async with aiohttp.ClientSession(base_url=base_url(daemon)) as http:
            for _ in range(TOTAL):
                request = bad_request(rng, samples)
                async with http.request(
                    request["method"],
                    request["path"],
                    data=request["data"],
                    params=request["params"],
                    headers={"Content-Type": "application/json"},
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    assert response.status < 500, (request, await response.text())
            async with http.get("/readyz") as response:
                assert response.status == 200
    assert sum(statuses.values()) == TOTAL
    assert statuses.get(400, 0) > TOTAL // 4  # most were really refused, not quietly accepted
