"""The systemd watchdog over a real notify socket: pinged while the writer runs, withheld when
it is down (so systemd restarts us)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge import app
from bridge.app import Daemon
from tests.conftest import daemon_config, until


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(256))
    return out


async def test_pings_while_the_writer_runs_and_withholds_when_it_is_down(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    async with Daemon(daemon_config(tmp_path / "data")) as daemon:
        watchdog = asyncio.create_task(app._watchdog(daemon))
        try:
            pings: list[bytes] = []
            await until(
                lambda: pings.extend(received(notify_socket)) or len(pings) >= 3, what="pings"
            )
            assert set(pings) == {b"WATCHDOG=1"}
            with capture_logs() as logs:
                await daemon.writer.commit_service.stop()  # as if it had died for good
                received(notify_socket)  # drop pings sent before the stop
                await until(
                    lambda: any(e["event"] == "watchdog_withheld" for e in logs), what="withheld"
                )
                after = received(notify_socket)
                assert b"WATCHDOG=1" not in after
                # ... and systemd's status line says why.
                assert any(m.startswith(b"STATUS=not ready: writer") for m in after), after
            withheld = next(e for e in logs if e["event"] == "watchdog_withheld")
            assert withheld["services"] == ["writer"]
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            daemon.writer.commit_service.start()  # so the daemon can close its outbox
