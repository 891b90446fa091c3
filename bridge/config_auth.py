"""Source authentication config: the ``[sources.auth]`` tables, one frozen type per scheme.

The ``type`` key picks the scheme (``none``, ``token``, ``basic``, ``digest``, ``webkey``);
:data:`Auth` is their union. Loaded (and re-exported) by :mod:`bridge.config`, the one place
that reads TOML: import these from there.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class AuthNone(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="none",
    tag_field="type",
):
    """No authentication: only for loopback or an IP allow-list."""


class AuthToken(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="token",
    tag_field="type",
):
    """A shared secret in a header or a query parameter."""

    token: Annotated[str, msgspec.Meta(min_length=8)]
    header: str = "X-Bridge-Token"
    query: str = "token"


class AuthBasic(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="basic",
    tag_field="type",
):
    """HTTP Basic (RFC 7617)."""

    username: Annotated[str, msgspec.Meta(min_length=1)]
    password: Annotated[str, msgspec.Meta(min_length=1)]
    realm: str = "pbx-bridge"


class AuthDigest(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="digest",
    tag_field="type",
):
    """HTTP Digest (RFC 7616, MD5 and SHA-256, qop=auth); optionally Basic as well."""

    username: Annotated[str, msgspec.Meta(min_length=1)]
    password: Annotated[str, msgspec.Meta(min_length=1)]
    realm: str = "pbx-bridge"
    nonce_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    accept_basic: bool = False


class AuthWebkey(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="webkey",
    tag_field="type",
):
    """Zycoo CooCenter: ``Authorization: md5(WEBKEY + 'YYYY-MM-DD')`` in the source's zone."""

    webkey: Annotated[str, msgspec.Meta(min_length=1)]


Auth = AuthNone | AuthToken | AuthBasic | AuthDigest | AuthWebkey

# The schemes each vendor's sender can use, from its document. Every sender's push URL is
# configured on the PBX, so it can carry a query token; beyond that CooCenter signs with its
# WEBKEY, and OnCall (PortSIP) authenticates with HTTP Basic or Digest. Coral's and the call
# log's documents give their pushes no credentials at all.
VENDOR_AUTH: dict[str, tuple[str, ...]] = {
    "coocenter": ("none", "token", "webkey"),
    "coral": ("none", "token"),
    "oncall": ("none", "token", "basic", "digest"),
    "callog": ("none", "token"),
}


def auth_type(auth: Auth) -> str:
    """The ``type`` key of an auth table: ``"token"`` for :class:`AuthToken`."""
    return str(type(auth).__struct_config__.tag)


def vendor_auth_problem(vendor: str, auth: Auth) -> str | None:
    """Why ``vendor``'s pushes cannot use ``auth``, or None when they can (or it is unknown)."""
    valid = VENDOR_AUTH.get(vendor)
    if valid is None or auth_type(auth) in valid:
        return None
    return (
        f"{vendor!r} sources cannot use {auth_type(auth)!r} authentication; expected one of "
        + ", ".join(repr(name) for name in valid)
    )
