"""Command-side config: a source's ``[sources.api]`` (its PBX's own API, for commands, queries
and gap repair) and ``[sources.provisioning]`` (a Call Control Manager in front of it).

Loaded (and re-exported) by :mod:`bridge.config`, the one place that reads TOML. Which
credential keys a vendor needs is checked by :func:`api_problems`, so a key that does not apply
to the source's vendor is an error that says so rather than a setting silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Final, Literal

import msgspec

_Timeout = Annotated[float, msgspec.Meta(gt=0, le=300)]
_Secret = Annotated[str, msgspec.Meta(min_length=1)]

CoralApiNameIn = Literal["path", "query", "header", "body"]


class SourceApi(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the bridge reaches a source's PBX API. Credentials are never logged or shown."""

    url: str  # the API's base, e.g. http://10.0.0.5:8000 (the vendor's paths are appended)
    timeout_s: _Timeout = 10.0  # an answer later than this: the outcome is "unknown"
    connect_timeout_s: _Timeout = 3.0  # no connection by then: not sent, safe to retry
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # commands in flight at once
    rate_per_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0  # sustained commands per second
    burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10  # commands allowed at once above it
    repair_after_gap: bool = True  # ask for the active calls after a realtime reconnect
    # Coral IRIS IVDX: the api-key, the agent headers sent with every call, and where the API
    # name travels (its document does not say): appended to the path (/api/v3/<name>), or as
    # the query parameter, header or JSON body key named by api_name_key.
    api_key: _Secret | None = None  # also the cloud IVR's apikey
    agent_ip: str | None = None
    agent_number: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    api_name_in: CoralApiNameIn = "path"
    api_name_key: Annotated[str, msgspec.Meta(min_length=1)] = "api"
    # OnCall / PortSIP: the tenant account whose token is kept and refreshed before it expires,
    # and what its make-call (api/extensions/call) needs: the tenant's SIP domain and an
    # extension whose web access password authorises the calls.
    username: _Secret | None = None
    password: _Secret | None = None
    token_refresh_margin_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    domain: str | None = None
    call_extension: str | None = None
    call_password: _Secret | None = None
    # Zycoo CooCenter: the WEBKEY of its API page (Authorization: md5(WEBKEY + date)), if set.
    webkey: _Secret | None = None
    # Cloud IVR: the customer id sent as custid beside apikey.
    customer_id: _Secret | None = None


class Provisioning(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Call Control Manager (``api.aspx``) that provisions this source's extensions."""

    url: str  # the api.aspx address, e.g. http://10.0.0.9:8000/api.aspx
    security_key: _Secret  # sent as qsSecuritykey
    timeout_s: _Timeout = 10.0
    connect_timeout_s: _Timeout = 3.0


# Which credential keys each vendor's API takes; "required" ones must be set.
_KEYS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "coral": (
        frozenset({"api_key"}),
        frozenset(
            {"agent_ip", "agent_number", "agent_id", "agent_name", "api_name_in", "api_name_key"}
        ),
    ),
    "oncall": (
        frozenset({"username", "password"}),
        frozenset({"token_refresh_margin_s", "domain", "call_extension", "call_password"}),
    ),
    "coocenter": (frozenset(), frozenset({"webkey"})),
    "callog": (frozenset({"api_key", "customer_id"}), frozenset()),
}
_VENDOR_KEYS: Final = frozenset().union(*(need | may for need, may in _KEYS.values()))


def api_problems(api: SourceApi, vendor: str) -> Iterator[tuple[str, str]]:
    """``(key, problem)`` for an ``[sources.api]`` table that does not fit the vendor."""
    if not api.url.startswith(("http://", "https://")):
        yield "url", f"expected an http:// or https:// URL, got {api.url!r}"
    if vendor not in _KEYS:
        yield "", f"vendor {vendor!r} has no command API"
        return
    need, may = _KEYS[vendor]
    for key in sorted(need):
        if getattr(api, key) is None:
            yield key, f"required for a {vendor} source's API"
    defaults = SourceApi(url="")
    for key in sorted(_VENDOR_KEYS - need - may):
        if getattr(api, key) != getattr(defaults, key):
            owners = sorted(v for v, (n, m) in _KEYS.items() if key in n | m)
            yield key, f"a setting of {' and '.join(owners)} sources, not of {vendor}"
