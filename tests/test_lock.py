"""One daemon per data directory: a second one refuses to start; a dead one's lock is gone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from bridge.store.lock import LOCK_NAME
from tests.daemonproc import DaemonProcess

PUSH = {"event": "extensionstatus", "exten": "808", "status": "0", "statustext": "Idle"}


async def run_second(data_dir: Path) -> tuple[int, str]:
    """``pbx-bridge run`` on ``data_dir`` to its end: (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_a_second_daemon_on_a_data_dir_in_use_refuses_to_start(tmp_path: Path) -> None:
    """It exits non-zero with one line naming the holder's pid; the first one keeps serving."""
    data_dir = tmp_path / "data"
    first = await DaemonProcess(data_dir).start()
    try:
        assert first.proc is not None
        code, stderr = await run_second(data_dir)
        assert code != 0
        assert stderr == (
            f"config error: storage.data_dir: data directory {data_dir} is in use by pbx-bridge"
            f" pid {first.proc.pid} (lock file {data_dir / LOCK_NAME})\n"
        )
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{first.url}/ingest/coocenter", json=PUSH) as response:
                assert response.status == 200
    finally:
        assert await first.stop() == 0


async def test_the_lock_of_a_killed_daemon_does_not_block_a_restart(tmp_path: Path) -> None:
    """After SIGKILL the lock file still names the dead pid, and a new daemon starts anyway."""
    data_dir = tmp_path / "data"
    killed = await DaemonProcess(data_dir).start()
    assert killed.proc is not None
    await killed.kill()
    assert (data_dir / LOCK_NAME).read_text() == f"{killed.proc.pid}\n"
    restarted = await DaemonProcess(data_dir).start()
    try:
        assert restarted.proc is not None
        assert (data_dir / LOCK_NAME).read_text() == f"{restarted.proc.pid}\n"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{restarted.url}/ingest/coocenter", json=PUSH) as response:
                assert response.status == 200
    finally:
        assert await restarted.stop() == 0
