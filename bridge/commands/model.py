"""The values a command passes through: no I/O here, so adapters can be tested with literals.

A :class:`Command` is what the CRM asked (normalised). An adapter turns it into an
:class:`HttpRequest` (exactly what the vendor's document shows) and the vendor's
:class:`HttpAnswer` into a :class:`Result`, or raises :class:`bridge.errors.CommandRefused`
carrying the vendor's own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from bridge.config import Provisioning, SourceApi, SourceConfig


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """A normalised command: ``action`` from :mod:`bridge.commands.actions`, checked ``args``."""

    source: str
    action: str
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP request to a PBX. ``url`` is complete (query included); ``body`` as sent."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


class HttpAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A PBX's answer: status, headers with lower-case names, the body (capped by the driver)."""

    status: int
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """A command the PBX carried out: normalised ``data`` (for queries, what they found) and
    the vendor's own message, if it gave one."""

    data: dict[str, Any] = msgspec.field(default_factory=dict)
    message: str | None = None


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A login a vendor API hands out (OnCall's access token), valid until ``expires_at``."""

    token: str
    expires_at: float  # epoch seconds


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter may know when it builds a request: the source (its ``api`` and
    ``provisioning`` tables), the login it holds, and the time (for date-keyed tokens)."""

    source: SourceConfig
    now: float  # epoch seconds
    session: Session | None = None

    @property
    def api(self) -> SourceApi:
        if self.source.api is None:
            raise ValueError(f"source {self.source.name!r} has no [sources.api] table")
        return self.source.api

    @property
    def provisioning(self) -> Provisioning:
        if self.source.provisioning is None:
            raise ValueError(f"source {self.source.name!r} has no [sources.provisioning] table")
        return self.source.provisioning
