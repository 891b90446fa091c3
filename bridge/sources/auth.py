"""Per-source authentication of vendor requests. Every secret compare is constant-time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from bridge.config import Auth, AuthBasic, AuthDigest, AuthNone, AuthToken, AuthWebkey
from bridge.errors import AuthError
from bridge.sources.digest import DigestAuth
from bridge.sources.request import Request, raw_bytes

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Authenticator(Protocol):
    def check(self, request: Request) -> None:
        """Return if the request is authentic, else raise :class:`AuthError`."""


def _equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(raw_bytes(presented), raw_bytes(expected))


class NoAuth:
    def check(self, request: Request) -> None:
        return None


class TokenAuth:
    def __init__(self, config: AuthToken) -> None:
        self._config = config

    def check(self, request: Request) -> None:
        presented = request.headers.get(self._config.header) or request.query.get(
            self._config.query, ""
        )
        if not presented or not _equal(presented, self._config.token):
            raise AuthError("missing or wrong token")


class BasicAuth:
    def __init__(self, config: AuthBasic) -> None:
        self._config = config
        self.challenge = f'Basic realm="{config.realm}", charset="UTF-8"'

    def check(self, request: Request) -> None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise AuthError("basic credentials required", (self.challenge,))
        try:
            decoded = base64.b64decode(raw_bytes(encoded.strip()), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed basic credentials", (self.challenge,)) from None
        username, sep, password = decoded.partition(":")
        user_ok = _equal(username, self._config.username)
        password_ok = _equal(password, self._config.password)
        if not (sep and user_ok and password_ok):
            raise AuthError("wrong username or password", (self.challenge,))


class WebkeyAuth:
    """Zycoo CooCenter: ``Authorization: md5(WEBKEY + 'YYYY-MM-DD')``, PBX-local date.

    Yesterday's and tomorrow's keys are accepted too: pushes sent around midnight, and PBX clock
    skew, would otherwise fail. The key is a day-long bearer token: pair it with ``allow_ips``.
    """

    def __init__(self, config: AuthWebkey, tz: tzinfo, clock: Clock = utc_now) -> None:
        self._webkey = config.webkey
        self._tz = tz
        self._clock = clock

    def keys(self) -> list[str]:
        today = self._clock().astimezone(self._tz).date()
        days = (today + timedelta(days=offset) for offset in (-1, 0, 1))
        return [webkey_for(self._webkey, day.isoformat()) for day in days]

    def check(self, request: Request) -> None:
        presented = request.headers.get("Authorization", "").strip().lower()
        if not presented:
            raise AuthError("missing Authorization (WEBKEY) header")
        ok = False
        for key in self.keys():  # no early exit
            ok |= _equal(presented, key)
        if not ok:
            raise AuthError("wrong WEBKEY digest")


def webkey_for(webkey: str, date: str) -> str:
    """The header value a CooCenter sends on ``date`` (``YYYY-MM-DD``)."""
    return hashlib.md5(raw_bytes(webkey + date), usedforsecurity=False).hexdigest()


class EitherAuth:
    """Digest, or Basic when the source also accepts it (PortSIP senders use either)."""

    def __init__(self, digest: Authenticator, basic: BasicAuth) -> None:
        self._digest = digest
        self._basic = basic

    def check(self, request: Request) -> None:
        if request.headers.get("Authorization", "")[:6].lower() == "basic ":
            self._basic.check(request)
        else:
            self._digest.check(request)


def build(auth: Auth, tz: tzinfo, clock: Clock = utc_now) -> Authenticator:
    if isinstance(auth, AuthNone):
        return NoAuth()
    if isinstance(auth, AuthToken):
        return TokenAuth(auth)
    if isinstance(auth, AuthBasic):
        return BasicAuth(auth)
    if isinstance(auth, AuthDigest):
        basic = BasicAuth(
            AuthBasic(username=auth.username, password=auth.password, realm=auth.realm)
        )
        digest = DigestAuth(
            username=auth.username,
            password=auth.password,
            realm=auth.realm,
            nonce_ttl_s=auth.nonce_ttl_s,
            extra_challenges=(basic.challenge,) if auth.accept_basic else (),
        )
        return EitherAuth(digest, basic) if auth.accept_basic else digest
    return WebkeyAuth(auth, tz, clock)
