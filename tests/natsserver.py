"""A private ``nats-server`` with JetStream on loopback, for the NATS sink's tests.

The server is the real third-party binary (Debian package ``nats-server``, installed by
``.ci/run``); without it the fixture fails with a clear message, it never skips, so CI cannot go
green by accident. It starts in a few milliseconds, so each test gets its own (function scope).

Readiness is read from the server's own log ("Server is ready", printed once the client
listener is up), never guessed with sleeps. ``restart()`` stops it and starts it again on the
same port with the same store directory, so JetStream streams survive and clients reconnect.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = (
    "nats-server is not installed. The NATS sink tests need the Debian package `nats-server`; "
    "`.ci/run` installs it — run `bash .ci/run`, or `apt-get update && apt-get install -y "
    "nats-server`."
)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_LISTENING = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")
_READY = b"Server is ready"


class NatsServerError(RuntimeError):
    pass


class NatsServer:
    """One private nats-server. Not loop-bound: blocking work runs in a thread when awaited."""

    def __init__(self, store_dir: Path) -> None:
        binary = shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")
        if binary is None:
            raise NatsServerError(INSTALL_HINT)
        self.binary = binary
        self.store_dir = store_dir
        self.port: int | None = None  # chosen by the server on first start (-p -1), then kept
        self._process: subprocess.Popen[bytes] | None = None
        self._log: list[bytes] = []

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start_blocking(self) -> None:
        if self.running:
            return
        # -p -1: the server binds a free port itself (no probe-then-bind race); later starts
        # reuse it so clients reconnect to the same URL.
        port = "-1" if self.port is None else str(self.port)
        process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", port, "-js", "-sd", str(self.store_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._process = process
        ready = threading.Event()
        found: list[int] = []
        log = self._log = []

        def drain() -> None:
            # Keeps reading after "ready": a full pipe would stall the server.
            assert process.stderr is not None
            for line in process.stderr:
                log.append(line)
                match = _LISTENING.search(line)
                if match:
                    found.append(int(match.group(1)))
                if _READY in line:
                    ready.set()
            ready.set()  # exited: wake the waiter, which then reports the log

        threading.Thread(target=drain, name="nats-server-log", daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or process.poll() is not None or not found:
            self.stop_blocking()
            raise NatsServerError("nats-server did not become ready:\n" + self.log_tail())
        self.port = found[0]

    def stop_blocking(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def start(self) -> None:
        await asyncio.to_thread(self.start_blocking)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)

    async def restart(self) -> None:
        """Stop and start on the same port and store directory (streams survive)."""
        await self.stop()
        await self.start()

    def log_tail(self, lines: int = 30) -> str:
        return b"".join(self._log[-lines:]).decode(errors="replace")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server with JetStream; ``.url``, ``.restart()``, ``.stop()``, ``.start()``."""
    try:
        server = NatsServer(tmp_path / "nats")
    except NatsServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start_blocking()
    try:
        yield server
    finally:
        server.stop_blocking()
