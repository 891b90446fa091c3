"""Logging as data: structlog JSON lines (console on a TTY), stdlib loggers routed through it."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from bridge.config import LoggingConfig

_REDACT = frozenset({"authorization", "password", "token", "webkey", "secret", "passcode"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Belt and braces: never print a value under a secret-looking key."""
    for key in event.keys() & _REDACT:
        event[key] = "***"
    return event


def setup(config: LoggingConfig, *, stream: Any = None) -> None:
    out = stream or sys.stdout
    console = config.format == "console" or (config.format == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        # filter_by_level first: a debug call on the hot path costs a level check, nothing more.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # aiohttp's access log is one line per vendor push: too loud at info for thousands/s.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
