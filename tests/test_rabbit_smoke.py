"""The RabbitMQ fixture works with clients we did not write.

A stock ``websockets`` client speaks hand-written STOMP frames to RabbitMQ's Web-STOMP, and
stomp.py publishes over plain TCP STOMP. If these pass, a failure in the bridge's own STOMP
interop tests is the bridge's, not the fixture's.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.rabbit import Rabbit

# Literal frames, as a browser STOMP client would send them (text frames, NUL-terminated).
# host:/ is the vhost; heart-beat:0,0 keeps the broker from sending bare newlines.
CONNECT = (
    b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\x00"
)
SUBSCRIBE_OC_778 = (
    b"SUBSCRIBE\nid:sub-0\ndestination:/topic/OC_778\nack:auto\nreceipt:subscribed\n\n\x00"
)


def parse(frame: str) -> tuple[str, dict[str, str], str]:
    """One STOMP frame: command, headers (first occurrence wins, as STOMP 1.2 says), body."""
    head, sep, rest = frame.lstrip("\r\n").partition("\n\n")
    assert sep, f"no header/body separator in {frame!r}"
    body, nul, _ = rest.partition("\x00")
    assert nul, f"frame not NUL-terminated: {frame!r}"
    command, *lines = head.split("\n")
    headers: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers.setdefault(key, value)
    return command, headers, body


async def recv_frame(ws: ClientConnection) -> tuple[str, dict[str, str], str]:
    async with asyncio.timeout(10):
        data = await ws.recv()
    assert isinstance(data, str), "Web-STOMP sends text frames by default"
    return parse(data)


async def subscribed(rabbit: Rabbit) -> ClientConnection:
    """A Web-STOMP session subscribed to /topic/OC_778, after the broker confirmed it."""
    ws = await connect(rabbit.ws_url, subprotocols=[Subprotocol("v12.stomp")])
    # RabbitMQ echoes the highest v1x.stomp protocol offered (none offered is also accepted).
    assert ws.subprotocol == "v12.stomp"
    await ws.send(CONNECT.decode())
    command, headers, _ = await recv_frame(ws)
    assert command == "CONNECTED", headers
    assert headers["version"] == "1.2"
    await ws.send(SUBSCRIBE_OC_778.decode())
    # Topic messages published before the binding exists are dropped: wait for the RECEIPT.
    command, headers, _ = await recv_frame(ws)
    assert (command, headers.get("receipt-id")) == ("RECEIPT", "subscribed"), headers
    return ws


async def test_tcp_publish_reaches_web_stomp_subscriber(rabbit: Rabbit) -> None:
    ws = await subscribed(rabbit)
    try:
        await rabbit.apublish("/topic/OC_778", '{"call":"c1","state":"ringing"}')
        command, headers, body = await recv_frame(ws)
        assert command == "MESSAGE", (headers, body)
        assert headers["destination"] == "/topic/OC_778"
        assert headers["subscription"] == "sub-0"
        assert body == '{"call":"c1","state":"ringing"}'
    finally:
        await ws.close()


async def test_restart_drops_clients_and_accepts_new_ones(rabbit: Rabbit) -> None:
    old = await subscribed(rabbit)
    await rabbit.restart()
    # The broker closed the old session; the client sees that rather than hanging.
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            await old.recv()

    ws = await subscribed(rabbit)
    try:
        await rabbit.apublish("/topic/OC_778", "after restart")
        command, _, body = await recv_frame(ws)
        assert (command, body) == ("MESSAGE", "after restart")
    finally:
        await ws.close()
