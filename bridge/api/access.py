"""Who may call the API: bearer tokens and their scopes, swapped whole on reload.

``read`` opens events, streams, calls and the sinks and sources lists; ``command`` lets a CRM
send commands to the PBXs (click-to-call, hangup, agent state) and read their capabilities
and outcomes; ``admin`` adds what changes state or shows raw payloads (quarantine, dead
letters, replay, reload, gap repair) and implies both. With no tokens configured (a loopback
listener) every call is allowed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web

from bridge.config import ApiConfig, Scope
from bridge.throttle import Throttle

log = structlog.get_logger("bridge.api")

REFUSED_LOG_INTERVAL_S: Final = 60.0  # one warning per reason a minute; the rest counted


@dataclass(frozen=True, slots=True)
class Grant:
    token: bytes
    scopes: frozenset[Scope]
    name: str  # for logs: never the token


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Access:
    def __init__(self, config: ApiConfig, *, throttle: Throttle | None = None) -> None:
        self.config = config
        self._grants: tuple[Grant, ...] = ()
        self._throttle = throttle or Throttle(REFUSED_LOG_INTERVAL_S)
        self.refused = 0  # requests answered 401 or 403, for /metrics
        self.configure(config)

    def configure(self, config: ApiConfig) -> None:
        grants = []
        for index, grant in enumerate(config.grants):
            scopes: set[Scope] = set(grant.scopes)
            if "admin" in scopes:
                scopes.update(("read", "command"))
            grants.append(Grant(_encode(grant.token), frozenset(scopes), grant.name or f"#{index}"))
        self.config, self._grants = config, tuple(grants)

    @property
    def open(self) -> bool:
        """No tokens: every caller may do everything (allowed on loopback only)."""
        return not self._grants

    def grant(self, presented: str) -> Grant | None:
        """The grant whose token this is, comparing with every one in constant time each."""
        wanted = _encode(presented)
        found = None
        for grant in self._grants:  # no early exit
            if hmac.compare_digest(wanted, grant.token):
                found = grant
        return found

    def grant_of(self, request: web.Request) -> Grant | None:
        """The grant a request presents (None without one, or with no tokens configured)."""
        return None if self.open else self.grant(presented_token(request))

    def denied(self, request: web.Request, scope: Scope) -> web.Response | None:
        """None when the request may go on; else the 401 (no valid token) or 403 to answer."""
        if self.open:
            return None
        presented = presented_token(request)
        grant = self.grant(presented)
        if grant is None:
            self._refused("no_token" if not presented else "wrong_token", request, scope)
            return unauthorized()
        if scope not in grant.scopes:
            self._refused("missing_scope", request, scope, token=grant.name)
            return web.json_response(
                {
                    "error": "forbidden",
                    "detail": f"this token lacks the {scope!r} scope",
                    "scope": scope,
                },
                status=403,
            )
        return None

    def _refused(self, reason: str, request: web.Request, scope: Scope, **extra: str) -> None:
        self.refused += 1
        if reason == "no_token":
            return  # a browser's first call before its login, a curl without -H: not news
        # Keyed by reason only: the peer and path are the client's to choose.
        self._throttle.log(
            reason,
            log.warning,
            "api_refused",
            reason=reason,
            scope=scope,
            peer=request.remote,
            path=request.path,
            **extra,
        )


def presented_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() == "bearer":
        return presented.strip()
    # EventSource and browser WebSockets cannot set headers: allow the query parameter.
    return request.query.get("access_token", "")


def unauthorized() -> web.Response:
    response = web.json_response(
        {"error": "unauthorized", "detail": "a valid bearer token is required"}, status=401
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="pbx-bridge"'
    return response
