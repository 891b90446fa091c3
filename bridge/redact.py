"""Credentials out of what the bridge shows: the API, logs, events and the status page."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"


def url(value: str) -> str:
    """``value`` without its secrets: user info and every query value become ``***``.

    Query values are hidden whatever their names (``token``, ``api_key``, ``sig``...): a
    receiver's URL is configuration, and its query is where services put credentials.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return HIDDEN  # not a URL we can take apart: show none of it
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{HIDDEN}@{netloc}"
    query = "&".join(
        f"{pair.partition('=')[0]}={HIDDEN}" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
