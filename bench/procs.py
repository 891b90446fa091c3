"""Child processes of the bench: started in their own session, always stopped, never leaked.

Children get their own session so a Ctrl-C reaches only the orchestrator, which then stops them
in order (SIGTERM, then SIGKILL); on Linux they also get SIGTERM should the orchestrator die
without cleaning up. Their stdout goes to a file, read back by polling, so a chatty child can
never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent  # so ``-m bench.*`` imports
PR_SET_PDEATHSIG: Final = 1
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One child process with its stdout in ``out``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        out: Path,
        *,
        cwd: Path = REPO,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.out = out
        with open(out, "wb") as handle:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=handle,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        """The JSON lines written so far (anything else is skipped)."""
        found = []
        for line in self.out.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict):
                    found.append(item)
        return found

    def wait_line(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
    ) -> dict[str, Any]:
        """The first JSON line that matches, waiting for it; fails if the child exits first."""
        deadline = time.monotonic() + timeout_s
        while True:
            for item in self.lines():
                if match(item):
                    return item
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: nothing expected after {timeout_s}s")
            time.sleep(0.02)

    def result(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """The last JSON line, once the child has exited by itself."""
        code = self.proc.wait(timeout_s)
        found = self.lines()
        if code != 0 or not found:
            raise RuntimeError(f"{self.name} exited ({code}): {self.tail()}")
        return found[-1]

    def tail(self) -> str:
        return self.out.read_bytes()[-2000:].decode(errors="replace")

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the whole process (every thread) so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the daemon drains and closes the outbox), then SIGKILL."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def listening_port(child: Child) -> int:
    line = child.wait_line(lambda item: item.get("event") == "listening")
    return int(line["port"])


def wait_until_ns(moment_ns: int) -> None:
    delay = (moment_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
