"""One daemon per data directory: an exclusive ``flock`` on ``<data_dir>/pbx-bridge.lock``.

Two daemons on one outbox would both believe they are its only writer (sequence numbers, sink
cursors, the calls table). The kernel drops an ``flock`` when its holder dies however it dies,
so a file left by a SIGKILL or power loss does not block the next start. The file is never
removed: unlinking it would let a process that opened the old file and a process that creates a
new one hold "the" lock at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from bridge.errors import ConfigError

LOCK_NAME = "pbx-bridge.lock"


class DataDirLock:
    """Held from ``__enter__`` to ``__exit__`` (or the process's end); the file names our pid."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            # Empty for the instant between the holder's flock and its write.
            who = f"pbx-bridge pid {holder}" if holder.isdigit() else "another pbx-bridge"
            raise ConfigError(
                "storage.data_dir",
                f"data directory {self.path.parent} is in use by {who} (lock file {self.path})",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid of a process that has stopped
            os.close(self._fd)  # releases the lock
            self._fd = None
