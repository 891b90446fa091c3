"""Vendor name -> its normaliser and answer."""

from __future__ import annotations

from typing import Final

from bridge.vendors import callog, coocenter, coral, oncall
from bridge.vendors.base import Vendor

VENDORS: Final[dict[str, Vendor]] = {
    vendor.name: vendor for vendor in (coocenter.VENDOR, coral.VENDOR, oncall.VENDOR, callog.VENDOR)
}
