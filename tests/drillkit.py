"""What the failure drills (tests/test_drills.py) share: a daemon process from a config dict,
its memory from /proc, the figures line each drill prints, the consumer API read as a client
would, raw requests on loopback, and a webhook receiver that misbehaves to a script."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.daemonproc import DaemonProcess
from tests.receiver import SECRET

# -- the daemon ----------------------------------------------------------------------------


def toml(config: Mapping[str, Any]) -> str:
    """``config`` as TOML: top-level tables and arrays of tables, inline tables inside them."""
    lines: list[str] = []
    for key, value in config.items():
        tables = value if isinstance(value, list) else [value]
        header = f"[[{key}]]" if isinstance(value, list) else f"[{key}]"
        for table in tables:
            lines.append(header)
            lines += [f"{name} = {_toml_value(item)}" for name, item in table.items()]
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


async def start_daemon(tmp_path: Path, config: Mapping[str, Any]) -> DaemonProcess:
    """``python -m bridge run --config`` with ``config`` (a TOML-shaped dict), data in tmp_path."""
    path = tmp_path / "bridge.toml"
    path.write_text(toml(config))
    return await DaemonProcess(tmp_path / "data", "--config", str(path)).start()


async def restart(daemon: DaemonProcess) -> DaemonProcess:
    """A new daemon process on the same data directory and config (a new port)."""
    return await DaemonProcess(daemon.data_dir, *daemon.extra).start()


def pid_of(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far (VmHWM, else VmRSS) in MiB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kib = fields.get("VmHWM", fields.get("VmRSS", "0 kB")).split()[0]
    return int(kib) / 1024


def loopback_tcp() -> list[tuple[int, int, int, int]]:
    """Loopback TCP sockets from /proc/net/tcp: (local port, remote port, tx_queue, rx_queue)."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, queues = parts[1], parts[2], parts[4]
        tx, rx = (int(q, 16) for q in queues.split(":"))
        rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), tx, rx))
    return rows


# -- what a drill reports ------------------------------------------------------------------


@dataclass
class Figures:
    """One drill's figures, printed as one ``DRILL <name>: ...`` line for the release note."""

    name: str
    acked: int = 0  # pushes answered 2xx
    lost: int = 0  # ... and not in the outbox (or not delivered, where the drill has a sink)
    doubled: int = 0  # ... in the outbox more than once
    server_errors: int = 0  # 5xx answers the drill's clients got
    rss_mib: float = 0.0  # the largest VmHWM of the drill's daemon processes
    extra: dict[str, object] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def sample(self, daemon: DaemonProcess) -> float:
        """Take the daemon's peak RSS into the figures (call it before the process ends)."""
        peak = peak_rss_mib(pid_of(daemon))
        self.rss_mib = max(self.rss_mib, peak)
        return peak

    def line(self) -> str:
        figures: dict[str, object] = {
            "acked": self.acked,
            "lost": self.lost,
            "doubled": self.doubled,
            "5xx": self.server_errors,
            "max_rss_mib": f"{self.rss_mib:.1f}",
            **self.extra,
            "seconds": f"{time.monotonic() - self.started:.1f}",
        }
        return f"DRILL {self.name}: " + " ".join(f"{k}={v}" for k, v in figures.items())

    def print(self) -> None:
        print(self.line(), flush=True)


def histogram(counts: Mapping[int, int]) -> str:
    """``{200: 3, 401: 5}`` as ``200:3,401:5`` (one token of a DRILL line)."""
    return ",".join(f"{key}:{counts[key]}" for key in sorted(counts)) or "none"


# -- the API, as a consumer reads it ---------------------------------------------------------


async def get_json(
    http: aiohttp.ClientSession, url: str, *, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def all_events(
    http: aiohttp.ClientSession, base: str, *, token: str | None = None
) -> list[dict[str, Any]]:
    """Every event in the outbox, paging ``GET /v1/events`` from the start."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        status, page = await get_json(
            http, f"{base}/v1/events?after={after}&limit=1000", token=token
        )
        assert status == 200, page
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next_after"]


async def sinks(
    http: aiohttp.ClientSession, base: str, *, token: str | None = None
) -> dict[str, dict[str, Any]]:
    status, body = await get_json(http, f"{base}/v1/sinks", token=token)
    assert status == 200, body
    return {sink["name"]: sink for sink in body["sinks"]}


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    return await get_json(http, f"{base}/readyz")


# -- raw requests ------------------------------------------------------------------------------


def request(
    method: bytes, target: bytes, *headers: bytes, body: bytes | None = None, close: bool = True
) -> bytes:
    """One HTTP/1.1 request as bytes (headers may hold what no client library would send)."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join([*lines, b"", body or b""])


async def raw_status(port: int, data: bytes, *, timeout_s: float = 10.0) -> int:
    """Send ``data`` on a new connection; the answer's status (0: none came)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    except ConnectionError:
        return 0
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def stalled_subscriber(port: int, data: bytes) -> tuple[socket.socket, bytes]:
    """Send ``data`` on a connection with a 4 KiB receive buffer, read the answer's head, and
    never read again: the daemon's writes to it back up (the socket is the caller's to close)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, data)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = await loop.sock_recv(sock, 1)  # a byte at a time: nothing past the head
        if not byte:
            raise ConnectionError(f"closed before the answer's head ended: {head!r}")
        head += byte
    return sock, head


def free_port() -> int:
    """A loopback port nothing listens on (a receiver that is down, until it comes up there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a webhook receiver that misbehaves to a script ---------------------------------------------

HUGE_BODY_BYTES = 128 << 20
_CHUNK = b"x" * (1 << 20)


class Hook:
    """A webhook receiver on a fixed loopback port, answering to a script of behaviours.

    ``script`` is ``[(mode, count), ...]``: the first ``count`` requests get the first mode, and
    so on; the last mode goes on forever. Modes: ``ok`` (200), ``error`` (500), ``gone`` (410),
    ``slow`` (200 after ``slow_s``), ``huge`` (200 and a 128 MiB body, streamed). It is down
    (nothing listens on its port: connection refused) until :meth:`up`. Every signature is
    checked with the ``standardwebhooks`` library.
    """

    def __init__(self, script: Sequence[tuple[str, int]], *, slow_s: float = 1.5) -> None:
        self.script = script
        self.slow_s = slow_s
        self.port = free_port()
        self.hits: list[tuple[str, str]] = []  # (mode, event id) per request, as they came
        self.delivered: Counter[str] = Counter()  # event id -> 2xx answers the sender got
        self.bad_signatures = 0
        self.huge_sent: list[int] = []  # bytes of each huge body written before the hang-up
        self.late = 0  # slow answers the sender was still waiting for (past its timeout)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _mode(self) -> str:
        n = len(self.hits)
        for mode, count in self.script:
            if n < count:
                return mode
            n -= count
        return self.script[-1][0]

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        event_id = json.loads(body)["id"]
        mode = self._mode()
        self.hits.append((mode, event_id))
        if mode == "error":
            return web.Response(status=500, text="receiver bug")
        if mode == "gone":
            return web.Response(status=410, text="gone")
        if mode == "slow":
            await asyncio.sleep(self.slow_s)  # the receiver's latency, not a synchronisation
            if request.transport is None or request.transport.is_closing():
                return web.Response(text="too late")  # the sender gave up: not a delivery
            self.late += 1
        if mode == "huge":
            return await self._huge(request, event_id)
        self.delivered[event_id] += 1
        return web.Response(text="ok")

    async def _huge(self, request: web.Request, event_id: str) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = HUGE_BODY_BYTES
        await response.prepare(request)
        self.delivered[event_id] += 1  # the status is out: a sender needs nothing more
        sent = 0
        try:
            while sent < HUGE_BODY_BYTES:
                await response.write(_CHUNK)
                sent += len(_CHUNK)
        except ConnectionError:
            pass  # the sender hung up, as it should once it has the status
        self.huge_sent.append(sent)
        return response
