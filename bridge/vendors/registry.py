"""Vendor name -> its normaliser and answer."""

from __future__ import annotations

from typing import Final

from bridge.vendors import callog, coocenter, coral, coral_realtime, oncall
from bridge.vendors.base import Normalizer, Vendor

VENDORS: Final[dict[str, Vendor]] = {
    vendor.name: vendor for vendor in (coocenter.VENDOR, coral.VENDOR, oncall.VENDOR, callog.VENDOR)
}

# Vendors with a realtime stream: the normaliser of one stream message.
STREAMS: Final[dict[str, Normalizer]] = {"coral": coral_realtime.normalize}
