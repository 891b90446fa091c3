"""The daemon as a real process (for tests that kill it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

_started: list[DaemonProcess] = []  # every daemon a test started, for kill_leftovers


def kill_leftovers() -> None:
    """SIGKILL every daemon a test started that still runs (a test that failed midway)."""
    while _started:
        proc = _started.pop().proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


async def reap_leftovers() -> None:
    """Like :func:`kill_leftovers`, and wait until they are gone (their files are free)."""
    while _started:
        daemon = _started.pop()
        if daemon.proc is not None and daemon.proc.returncode is None:
            await daemon.kill()


class DaemonProcess:
    """``python -m bridge run`` on loopback port 0; ``port`` comes from its 'listening' log line."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.lines: list[dict[str, object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 30.0) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        _started.append(self)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
            *self.extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise RuntimeError(f"daemon exited before listening: {self.lines}")
                try:
                    line = json.loads(raw)
                except ValueError:
                    self.lines.append({"text": raw.decode(errors="replace")})
                    continue
                self.lines.append(line)
                if line.get("event") == "listening":
                    self.port = int(line["port"])  # type: ignore[call-overload]
                    break
        self._drain = asyncio.create_task(self._read_rest())
        return self

    async def _read_rest(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"text": raw.decode(errors="replace")})

    async def kill(self) -> None:
        """SIGKILL: no drain, no clean close — a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self._drain

    async def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.proc.wait()
            await self._drain
        return code
