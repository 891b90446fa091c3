"""Which actions a source supports: its vendor's adapter through ``[sources.api]``, the Call
Control Manager's through ``[sources.provisioning]``, each with its timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.commands import registry
from bridge.commands.actions import Action
from bridge.commands.adapter import Adapter
from bridge.config import SourceConfig


@dataclass(frozen=True, slots=True)
class Bound:
    """An action as one source supports it: the adapter that sends it, and its timeouts."""

    action: Action
    adapter: Adapter
    timeout_s: float
    connect_timeout_s: float


def bound_actions(source: SourceConfig) -> dict[str, Bound]:
    """Every action ``source`` supports, from its ``api`` and ``provisioning`` tables."""
    out: dict[str, Bound] = {}
    adapter = registry.ADAPTERS.get(source.vendor)
    if source.api is not None and adapter is not None:
        for name, action in adapter.actions.items():
            out[name] = Bound(action, adapter, source.api.timeout_s, source.api.connect_timeout_s)
    ccm = registry.PROVISIONING
    if (prov := source.provisioning) is not None and ccm is not None:
        for name, action in ccm.actions.items():
            out[name] = Bound(action, ccm, prov.timeout_s, prov.connect_timeout_s)
    return out


def capabilities(source: SourceConfig) -> dict[str, Any]:
    """What ``GET /v1/sources/{name}/capabilities`` answers."""
    bound = bound_actions(source)
    return {
        "source": source.name,
        "vendor": source.vendor,
        "actions": {
            name: {
                "summary": item.action.summary,
                "query": item.action.query,
                "via": "provisioning" if item.adapter is registry.PROVISIONING else "api",
                "args": item.action.schema(),
            }
            for name, item in sorted(bound.items())
        },
    }
