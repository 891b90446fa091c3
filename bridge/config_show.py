"""The effective configuration as TOML, every credential masked (``check-config --print``).

Defaults are filled in, so the output says what the daemon will run with; it is valid TOML of
the same shape as the file, but not a file to run: every secret reads ``***``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import tomli_w

from bridge import redact
from bridge.config import Config
from bridge.config_walk import SECRET_KEYS, SECRET_TABLES, URL_KEYS

HEADER = (
    "# pbx-bridge effective configuration: every key, defaults filled in.\n"
    f"# Credentials are shown as {redact.HIDDEN}; a key left out has no value (off).\n\n"
)


def render(config: Config) -> str:
    """``config`` as TOML, with every credential (and the credentials in URLs) masked."""
    return HEADER + tomli_w.dumps(_table(msgspec.to_builtins(config)))


def _table(table: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in table.items():
        if value is None:  # TOML has no null: an unset optional key is absent
            continue
        if key in SECRET_KEYS:
            shown[key] = _hidden(value)
        elif key in SECRET_TABLES and isinstance(value, dict):
            shown[key] = {name: redact.HIDDEN for name in value}
        elif key in URL_KEYS:
            shown[key] = _urls(value)
        else:
            shown[key] = _plain(value)
    return shown


def _hidden(value: Any) -> Any:
    """A credential masked; a list keeps its length, a table (a scoped token) its other keys."""
    if isinstance(value, list | tuple):
        return [_hidden(item) for item in value]
    if isinstance(value, dict):
        return _table(value)
    return redact.HIDDEN


def _urls(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_urls(item) for item in value]
    return redact.url(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return _table(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
