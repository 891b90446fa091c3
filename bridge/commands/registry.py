"""Vendor name to its command adapter; the Call Control Manager's for provisioning."""

from __future__ import annotations

from typing import Final

from bridge.commands import callog, ccm, coocenter, coral, oncall
from bridge.commands.adapter import Adapter

ADAPTERS: Final[dict[str, Adapter]] = {
    "coral": coral.ADAPTER,
    "oncall": oncall.ADAPTER,
    "coocenter": coocenter.ADAPTER,
    "callog": callog.ADAPTER,
}
PROVISIONING: Final[Adapter | None] = ccm.ADAPTER
