"""HTTP Digest authentication, server side (RFC 7616): MD5 and SHA-256, ``qop=auth``.

Nonces are stateless to issue (a timestamp and random bytes, signed with a per-process key) and
expire after ``nonce_ttl_s``: an expired but otherwise valid nonce is answered with a fresh
challenge carrying ``stale=true`` (RFC 7616 3.3), so a client retries without asking the user.
Replays are refused: a nonce-count (``nc``) is accepted once per nonce. The counts used are kept
in memory until the nonce expires, and a nonce is retired (stale) after ``MAX_USES`` requests,
so memory stays bounded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
import time
from collections.abc import Callable
from typing import Final

from bridge.errors import AuthError
from bridge.sources.request import Request, raw_bytes

_HASHES: Final[dict[str, Callable[[bytes], hashlib._Hash]]] = {
    "SHA-256": hashlib.sha256,
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False),
}
# Preference order of the challenges: clients take the first algorithm they support.
ALGORITHMS: Final = ("SHA-256", "MD5")
# Requests one nonce may authenticate before the client is asked (stale=true) to take a new one.
MAX_USES: Final = 10_000

# key=value or key="quoted value" (with \" escapes), comma separated.
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)')


def parse_params(header_value: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` credentials value (names lower-cased)."""
    params: dict[str, str] = {}
    position = 0
    while position < len(header_value):
        match = _PARAM.match(header_value, position)
        if match is None:
            raise AuthError("malformed digest credentials")
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return params


class DigestAuth:
    """Challenges and verifies Digest credentials for one username/password."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        realm: str,
        nonce_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        extra_challenges: tuple[str, ...] = (),
    ) -> None:
        self._username = username
        self._password = password
        self._realm = realm
        self._ttl = nonce_ttl_s
        self._clock = clock
        self._key = os.urandom(32)
        self._opaque = base64.b64encode(os.urandom(12)).decode()
        self._extra = extra_challenges
        # nonce -> (issued at, nonce counts already used). A set, not "the highest so far":
        # a client sending concurrent requests on one nonce may deliver them out of order.
        self._seen: dict[str, tuple[float, set[int]]] = {}

    # -- challenges ----------------------------------------------------------------------

    def _nonce(self) -> str:
        issued = struct.pack(">d", self._clock()) + os.urandom(8)
        mac = hmac.new(self._key, issued, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(issued + mac).decode()

    def challenges(self, *, stale: bool = False) -> tuple[str, ...]:
        nonce = self._nonce()
        extra = ", stale=true" if stale else ""
        digest = tuple(
            f'Digest realm="{self._realm}", qop="auth", algorithm={algorithm}, '
            f'nonce="{nonce}", opaque="{self._opaque}"{extra}'
            for algorithm in ALGORITHMS
        )
        return digest + self._extra

    def _refuse(self, reason: str, *, stale: bool = False) -> AuthError:
        return AuthError(reason, self.challenges(stale=stale))

    def _issued_at(self, nonce: str) -> float | None:
        """When we issued ``nonce``, or None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode())
        except (ValueError, TypeError):
            return None
        if len(raw) != 32:
            return None
        issued, mac = raw[:16], raw[16:]
        expected = hmac.new(self._key, issued, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        (moment,) = struct.unpack(">d", issued[:8])
        return float(moment)

    # -- verification --------------------------------------------------------------------

    def check(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest":
            raise self._refuse("digest credentials required")
        params = parse_params(rest)
        for name in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce"):
            if name not in params:
                raise self._refuse(f"digest credentials lack {name!r}")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in _HASHES:
            raise self._refuse(f"unsupported digest algorithm {algorithm!r}")
        if params["qop"] != "auth":
            raise self._refuse("only qop=auth is supported")
        if params["uri"] != request.path_qs:
            raise self._refuse("digest uri does not match the request")
        issued = self._issued_at(params["nonce"])
        if issued is None:
            raise self._refuse("unknown nonce")
        try:
            count = int(params["nc"], 16)
        except ValueError:
            raise self._refuse("malformed nonce count") from None
        expected = self._response(params, algorithm, request.method)
        user_ok = hmac.compare_digest(raw_bytes(params["username"]), raw_bytes(self._username))
        response_ok = hmac.compare_digest(raw_bytes(params["response"].lower()), expected.encode())
        realm_ok = params["realm"] == self._realm
        if not (user_ok and response_ok and realm_ok):
            raise self._refuse("wrong digest credentials")
        now = self._clock()
        if now - issued > self._ttl:
            # The credentials were right: only the nonce is old, so the client may retry at once.
            raise self._refuse("nonce expired", stale=True)
        self._forget_expired(now)
        _, used = self._seen.setdefault(params["nonce"], (issued, set()))
        if count in used:
            raise self._refuse("replayed nonce count")
        if len(used) >= MAX_USES:
            raise self._refuse("nonce used up", stale=True)  # bounds memory per nonce
        used.add(count)

    def _response(self, params: dict[str, str], algorithm: str, method: str) -> str:
        h = _HASHES[algorithm]

        def digest(*parts: str) -> str:
            return h(raw_bytes(":".join(parts))).hexdigest()

        ha1 = digest(self._username, self._realm, self._password)
        ha2 = digest(method, params["uri"])
        return digest(ha1, params["nonce"], params["nc"], params["cnonce"], params["qop"], ha2)

    def _forget_expired(self, now: float) -> None:
        if len(self._seen) < 1024:
            return
        for nonce, (issued, _) in list(self._seen.items()):
            if now - issued > self._ttl:
                del self._seen[nonce]
