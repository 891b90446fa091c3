"""A Coral IRIS IVDX realtime server: STOMP 1.2 over WebSocket, for demos and tests.

It speaks enough STOMP to stand in for the PBX's ``ws://HOST:8989/realtime``: CONNECTED (or an
ERROR, on demand or for a wrong login), SUBSCRIBE, MESSAGE frames with channel-state JSON to
every subscriber of a destination, heart-beats at the negotiated rate, and DISCONNECT answered
with its RECEIPT before the connection closes. For failure testing it can drop every connection,
stall its heart-beats, refuse connects, or send any body. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from websockets import Subprotocol
from websockets.asyncio.server import Server, ServerConnection, serve

from bridge.errors import ConfigError
from bridge.sources import stomp_codec as codec

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
# STOMP 1.2 "DISCONNECT": the client closes once it has the RECEIPT; one that lingers is closed.
CLOSE_AFTER_RECEIPT_S = 1.0


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    subscriptions: dict[str, str] = field(default_factory=dict)  # destination -> subscription id
    beats: asyncio.Task[None] | None = None


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The first STOMP version both sides speak; a client that offers none (Coral's own sample
    client offers none) is served without one, as a real PBX does."""
    return next((Subprotocol(p) for p in SUBPROTOCOLS if p in offered), None)


class RealtimeServer:
    """The simulated PBX side. ``async with RealtimeServer() as server: server.url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        login: str | None = None,
        passcode: str | None = None,
        heartbeat_ms: tuple[int, int] = (1000, 1000),
    ) -> None:
        if not _loopback(host):
            raise ConfigError("listen", f"the simulator listens on loopback only, not {host!r}")
        self._host, self._port = host, port
        self._login, self._passcode = login, passcode
        self._heartbeat = heartbeat_ms
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._ids = itertools.count(1)
        self.refuse = 0  # answer this many coming CONNECTs with an ERROR frame
        self.stalled = False  # stop sending heart-beats (the connection stays open)
        self.connects = 0
        self.connect_times: list[float] = []  # monotonic time of every CONNECT (backoff checks)
        self.subscribed = asyncio.Event()  # set whenever a SUBSCRIBE arrives
        self.sent = 0
        self.disconnects = 0  # DISCONNECT frames received
        self.receipts = 0  # RECEIPTs sent for them
        self.close_codes: list[int | None] = []  # the WebSocket close code of each ended client

    async def __aenter__(self) -> RealtimeServer:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://{self._host}:{port}/realtime"

    @property
    def subscribers(self) -> int:
        return sum(1 for client in self._clients if client.subscriptions)

    # -- control -------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Cut every connection without a closing handshake (a PBX restart, a network drop)."""
        self.subscribed.clear()
        for client in list(self._clients):
            client.ws.transport.abort()

    async def error_all(self, message: str) -> None:
        """Send an ERROR frame to every client, then close (STOMP 1.2: ERROR ends the session)."""
        self.subscribed.clear()
        for client in list(self._clients):
            await client.ws.send(_text(codec.Frame("ERROR", (("message", message),))))
            await client.ws.close()

    async def publish(self, destination: str, message: dict[str, Any]) -> int:
        """Send one MESSAGE to every subscriber of ``destination``; returns how many got it."""
        return await self.publish_body(destination, json.dumps(message).encode())

    async def publish_body(
        self, destination: str, body: bytes, content_type: str = "application/json"
    ) -> int:
        """Send one MESSAGE with ``body`` as it is (any bytes: not UTF-8 goes as a binary
        WebSocket message) to every subscriber of ``destination``."""
        delivered = 0
        for client in list(self._clients):
            subscription = client.subscriptions.get(destination)
            if subscription is None:
                continue
            frame = codec.Frame(
                "MESSAGE",
                (
                    ("destination", destination),
                    ("subscription", subscription),
                    ("message-id", str(next(self._ids))),
                    ("content-type", content_type),
                ),
                body,
            )
            wire = codec.encode(frame)
            try:
                data: str | bytes = wire.decode()
            except UnicodeDecodeError:
                data = wire
            with contextlib.suppress(Exception):
                await client.ws.send(data)
                delivered += 1
        self.sent += delivered
        return delivered

    # -- one connection ------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        decoder = codec.Decoder()
        try:
            async for data in ws:
                for item in decoder.feed(data):
                    if isinstance(item, codec.Frame):
                        await self._frame(client, item)
        except codec.StompProtocolError as exc:
            await ws.send(_text(codec.Frame("ERROR", (("message", str(exc)),))))
        except Exception:  # a dropped client: nothing to do but forget it
            pass
        finally:
            self._clients.discard(client)
            if client.beats is not None:
                client.beats.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_AFTER_RECEIPT_S):
                    await ws.wait_closed()
            self.close_codes.append(ws.close_code)

    async def _frame(self, client: _Client, frame: codec.Frame) -> None:
        if frame.command in ("CONNECT", "STOMP"):
            self.connects += 1
            self.connect_times.append(time.monotonic())
            wrong = self._login is not None and (
                frame.header("login") != self._login or frame.header("passcode") != self._passcode
            )
            if self.refuse or wrong:
                self.refuse = max(0, self.refuse - 1)
                reason = "access refused" if wrong else "server unavailable"
                await client.ws.send(_text(codec.Frame("ERROR", (("message", reason),))))
                await client.ws.close()
                return
            send_ms, _ = codec.negotiate(self._heartbeat, frame.header("heart-beat"))
            headers = (
                ("version", "1.2"),
                ("heart-beat", f"{self._heartbeat[0]},{self._heartbeat[1]}"),
            )
            await client.ws.send(_text(codec.Frame("CONNECTED", headers)))
            self._clients.add(client)
            client.beats = asyncio.create_task(self._beat(client, send_ms))
        elif frame.command == "SUBSCRIBE":
            destination, sub_id = frame.header("destination"), frame.header("id")
            if destination and sub_id:
                client.subscriptions[destination] = sub_id
                self.subscribed.set()
        elif frame.command == "DISCONNECT":
            self.disconnects += 1
            receipt = frame.header("receipt")
            if receipt is not None:
                await client.ws.send(_text(codec.Frame("RECEIPT", (("receipt-id", receipt),))))
                self.receipts += 1
            # The client closes once it has the RECEIPT; close ourselves only if it does not.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_AFTER_RECEIPT_S):
                    await client.ws.wait_closed()
            await client.ws.close()

    async def _beat(self, client: _Client, send_ms: int) -> None:
        if not send_ms:
            return
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(send_ms / 1000)
                if not self.stalled:
                    await client.ws.send(codec.HEARTBEAT_BYTES.decode())


def _text(frame: codec.Frame) -> str:
    return codec.encode(frame).decode()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_snippet(url: str, group: str) -> str:
    """The config a bridge needs to subscribe to this server: a whole file, ready to run."""
    return (
        "[[sources]]\n"
        'name = "coral"\n'
        'vendor = "coral"\n'
        "\n"
        "[sources.realtime]\n"
        f'url = "{url}"\n'
        f'destinations = ["/topic/OC_{group}", "/topic/STATE_UPDATE"]\n'
    )


async def serve_forever(
    *,
    host: str,
    port: int,
    calls: int,
    rate: float,
    group: str,
    drop_every_s: float | None,
    seed: int | None,
    idle_warn_s: float | None = 30.0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> None:
    """``pbx-bridge simulate coral-realtime``: play call streams to whoever subscribes.

    The bridge is the client here: nothing happens until a source with a ``realtime`` section
    pointing at this server connects, so say how, and say so on ``err`` if nobody has within
    ``idle_warn_s`` (None: never).
    """
    from bridge.banner import command_name
    from bridge.simulate import coral_streams

    rng = random.Random(seed)
    async with RealtimeServer(host=host, port=port) as server:
        print(
            f"listening on {server.url} (topics /topic/OC_{group}, /topic/STATE_UPDATE)", file=out
        )
        snippet = "".join(
            f"    {line}".rstrip() + "\n" for line in config_snippet(server.url, group).splitlines()
        )
        print(
            "\nThe bridge connects to this server, not the other way round, and the default "
            "config has no realtime source.\nTo have one subscribe, save this as "
            "coral-realtime.toml:\n\n"
            f"{snippet}\n"
            "and run it (stop a default daemon first: same port, same data directory):\n"
            f"    {command_name()} run --config coral-realtime.toml\n",
            file=out,
            flush=True,
        )
        if idle_warn_s is not None:
            try:
                async with asyncio.timeout(idle_warn_s):
                    await server.subscribed.wait()
            except TimeoutError:
                print(
                    f"nobody has subscribed to {server.url} in {idle_warn_s:g} s: no bridge "
                    "source has it as its realtime url yet (see above); still waiting",
                    file=err,
                    flush=True,
                )
        await server.subscribed.wait()
        print(f"a subscriber connected; playing {calls} calls", file=out, flush=True)
        scenarios = coral_streams.scenarios(rng, count=calls, group=group)
        for played, scenario in enumerate(scenarios, start=1):
            for destination, message in scenario.messages:
                await server.publish(destination, message)
                await asyncio.sleep(1 / rate)
            print(f"call {played}: {scenario.kind} {len(scenario.messages)} messages", file=out)
            if drop_every_s and played % max(1, int(drop_every_s * rate)) == 0:
                print("dropping every connection", file=out)
                server.drop_all()
                await server.subscribed.wait()
        print(f"done: {server.sent} messages delivered", file=out)
