"""What a vendor adapter is, and the small helpers every adapter shares.

An adapter is pure both ways: ``build(command, target) -> HttpRequest`` and
``parse(command, answer) -> Result`` (raising :class:`CommandRefused` with the vendor's own
message). A vendor whose API needs a login (OnCall) adds ``login`` and ``logged_in``; the driver
keeps the session and calls ``login`` again before it expires, or once after a
:class:`SessionExpired`. A vendor with a call-history API adds ``history_events``, which makes
of its records the same events (the same ids) its pushes would have made, so a reconcile run
adds what never arrived and the outbox drops the rest as duplicates.

Normalised query results, whatever the vendor:

- ``calls.active``: ``{"calls": [{"call_id", "from", "to", "extension", "state", ...}]}``
- ``extensions.status``: ``{"extensions": [{"extension", "state", "vendor_state"}]}``, ``state``
  one of :data:`bridge.events.EXTENSION_STATES`
- ``calls.history``: ``{"records": [<vendor record>, ...], "next_page": int | None}``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msgspec

from bridge.commands.actions import Action
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Session, Target
from bridge.errors import CommandError, CommandRefused, CommandUnknown
from bridge.events import Event
from bridge.vendors.base import SourceContext

Build = Callable[[Command, Target], HttpRequest]
Parse = Callable[[Command, HttpAnswer], Result]
Login = Callable[[Target], HttpRequest]
LoggedIn = Callable[[HttpAnswer, float], Session]
HistoryEvents = Callable[[Sequence[Mapping[str, Any]], SourceContext], list[Event]]


@dataclass(frozen=True, kw_only=True)
class Adapter:
    vendor: str
    actions: Mapping[str, Action]
    build: Build
    parse: Parse
    login: Login | None = None
    logged_in: LoggedIn | None = None
    history_events: HistoryEvents | None = None


_json = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def json_body(value: object) -> bytes:
    return _encoder.encode(value)


def with_query(url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended as a query string, in the order given."""
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def join(base: str, path: str) -> str:
    """The API base URL and a vendor path, with exactly one slash between them."""
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


def unreadable(answer: HttpAnswer, text: str) -> CommandError:
    """What an answer the adapter cannot read means. After a 2xx the PBX took the request and
    may have acted, so it is :class:`CommandUnknown` (never re-sent); any other status is a
    refusal. ``text`` is what to quote of it, already free of credentials."""
    if 200 <= answer.status < 300:
        return CommandUnknown(
            f"the PBX answered HTTP {answer.status} in a shape it does not document ({text!r}):"
            " the command may have been carried out, and is not sent again"
        )
    return CommandRefused(
        f"the PBX answered HTTP {answer.status} in a shape it does not document: {text!r}",
        status=answer.status,
    )


def _excerpt(answer: HttpAnswer, limit: int = 200) -> str:
    text = answer.text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
