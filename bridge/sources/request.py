"""What an authenticator may read of a request, and how to read its header bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Request(Protocol):
    """What an authenticator may look at (aiohttp's request satisfies it)."""

    @property
    def method(self) -> str: ...

    @property
    def path_qs(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...


def raw_bytes(text: str) -> bytes:
    """A header value's bytes as sent: aiohttp keeps undecodable bytes as surrogates, which a
    plain ``encode()`` refuses (a 500 for a client that sends Latin-1 in a credential)."""
    return text.encode("utf-8", "surrogateescape")
