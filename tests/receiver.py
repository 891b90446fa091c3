"""A real webhook receiver on loopback, failing in scripted patterns, verifying every signature
with the `standardwebhooks` library (a verifier we did not write)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"pbx-bridge-test-secret-0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"pbx-bridge-old-secret-9876543210x").decode()

# (event, how many times this event id was received before) -> (status, headers)
Script = Callable[[dict[str, Any], int], tuple[int, dict[str, str]]]


def always_ok(event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
    return 200, {}


@dataclass
class Receiver:
    script: Script = always_ok
    secret: str = SECRET
    attempts: list[tuple[float, dict[str, Any], int]] = field(
        default_factory=list
    )  # (t, event, status)
    bad_signatures: int = 0
    delay_s: float = 0.0  # the receiver's own latency (keeps deliveries in flight)
    batches: list[int] = field(default_factory=list)  # sizes of the batch requests received
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    def delivered(self) -> list[dict[str, Any]]:
        """Events answered 2xx, in arrival order (duplicates included)."""
        return [event for _, event, status in self.attempts if 200 <= status < 300]

    def tries(self, event_id: str) -> list[float]:
        return [t for t, event, _ in self.attempts if event["id"] == event_id]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        decoded = json.loads(body)
        if isinstance(decoded, list):  # a batch: one webhook-id for the request
            self.batches.append(len(decoded))
            events = decoded
        else:
            assert request.headers["webhook-id"] == decoded["id"]
            events = [decoded]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        # A batch is answered as its first event's script says.
        seen = sum(1 for _, e, _ in self.attempts if e["id"] == events[0]["id"])
        status, headers = self.script(events[0], seen)
        now = time.monotonic()
        self.attempts.extend((now, event, status) for event in events)
        return web.Response(status=status, headers=headers, text="ok")


@asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    receiver.server = TestServer(app, host="127.0.0.1", port=0)
    await receiver.server.start_server()
    try:
        yield receiver
    finally:
        await receiver.server.close()
