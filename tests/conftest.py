from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.api.hub import Hub
from bridge.config import StorageConfig
from bridge.events import Event, make_event
from bridge.store.reader import Reader
from bridge.store.writer import Writer

T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def call_event(
    kind: str,
    call: str = "c1",
    *,
    n: int = 0,
    source: str = "hq",
    **data: Any,
) -> Event:
    """A normalised call event as a vendor module would make it."""
    return make_event(
        source_name=source,
        vendor="test",
        vendorevent=kind,
        type=kind,
        time=T0,
        subject=f"call/{call}",
        identity=(call, n),
        data={"call_id": call, **data},
    )


def other_event(n: int, *, type: str = "extension.state") -> Event:
    return make_event(
        source_name="hq",
        vendor="test",
        vendorevent="x",
        type=type,
        time=T0,
        subject=f"extension/{n}",
        identity=(n,),
        data={"extension": str(n), "state": "idle"},
    )


@pytest.fixture
def storage(tmp_path: Path) -> StorageConfig:
    return StorageConfig(data_dir=str(tmp_path / "data"), linger_ms=1.0)


@pytest.fixture
async def hub() -> Hub:
    return Hub(client_queue=64)


@pytest.fixture
async def writer(storage: StorageConfig, hub: Hub) -> AsyncIterator[Writer]:
    async with Writer(storage, hub.publish) as running:
        yield running


@pytest.fixture
async def reader(writer: Writer, storage: StorageConfig) -> AsyncIterator[Reader]:
    opened = Reader(str(storage.path))
    yield opened
    opened.close()


# -- a whole daemon in-process, on loopback port 0 -------------------------------------------

from bridge import config as config_module  # noqa: E402
from bridge.app import Daemon  # noqa: E402
from bridge.config import Config  # noqa: E402


def daemon_config(data_dir: Path, **overrides: Any) -> Config:
    """The embedded default on port 0 in ``data_dir``, with TOML-shaped overrides merged in."""
    raw: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"data_dir": str(data_dir), "linger_ms": 1},
        "sources": [{"name": "coocenter", "vendor": "coocenter"}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return config_module.from_dict(raw)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Daemon(daemon_config(tmp_path / "data")) as running:
        yield running


def base_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.port}"


async def until(predicate: Any, *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Wait for ``predicate()`` to hold, polling; fail after ``timeout_s`` (no bare sleeps)."""
    import asyncio

    async with asyncio.timeout(timeout_s):
        for _ in iter(int, 1):  # forever, until the timeout
            if predicate():
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"{what} did not happen")  # pragma: no cover


# The session's private RabbitMQ (STOMP interop tests). Imported here only: pytest would start
# a second broker for a second import.
from tests.rabbit import rabbit  # noqa: E402, F401


async def until_true(check: Any, *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Like :func:`until`, for a check that must itself be awaited (an API or database read)."""
    import asyncio

    async with asyncio.timeout(timeout_s):
        for _ in iter(int, 1):
            if await check():
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"{what} did not happen")  # pragma: no cover


@pytest.fixture(autouse=True)
def _no_leftover_daemons() -> Iterator[None]:
    """A test that fails midway must not leave its daemon processes running."""
    yield
    from tests.daemonproc import kill_leftovers

    kill_leftovers()
