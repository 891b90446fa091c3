"""Logs are data: JSON lines, stdlib loggers routed through the same pipeline, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bridge import logs
from bridge.config import LoggingConfig


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.setup(LoggingConfig(level="info", format="json"), stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_lines(captured: io.StringIO) -> None:
    """A structlog event is one JSON object with its fields, level, logger and timestamp."""
    structlog.get_logger("bridge.test").info("event_committed", seq=7)
    (line,) = lines(captured)
    assert line["event"] == "event_committed"
    assert line["seq"] == 7
    assert line["level"] == "info"
    assert "timestamp" in line


def test_stdlib_loggers_are_routed_through_structlog(captured: io.StringIO) -> None:
    """aiohttp and websockets log through stdlib: those lines are JSON too."""
    logging.getLogger("aiohttp.server").warning("bad request from %s", "127.0.0.1")
    (line,) = lines(captured)
    assert line["event"] == "bad request from 127.0.0.1"
    assert line["logger"] == "aiohttp.server"


def test_secret_fields_are_redacted(captured: io.StringIO) -> None:
    """A value logged under a secret-looking key never reaches the output."""
    structlog.get_logger("bridge.test").warning("auth_failed", webkey="hunter2", token="t")
    assert "hunter2" not in captured.getvalue()
    assert lines(captured)[0]["webkey"] == "***"


def test_level_filters_debug(captured: io.StringIO) -> None:
    """At info, debug events are not written."""
    structlog.get_logger("bridge.test").debug("noise")
    assert captured.getvalue() == ""
