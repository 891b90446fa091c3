"""Vendor fixtures: a sample payload, the source it arrived at, and the exact events it makes.

A fixture file is ``tests/fixtures/<vendor>/<case>.json``::

    {"description": "...", "note": "optional",
     "source": {"name": "hq", "timezone": "Asia/Shanghai"}, "received_at": "2018-11-05T11:06:00Z",
     "payload": {...}, "events": [...]}

``payload`` is the JSON body; a vendor that reads a query string uses ``"query": {...}``
instead. ``source`` may also carry ``extension_max_digits``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.vendors.base import Payload, SourceContext

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixtures(vendor: str) -> list[tuple[str, dict[str, Any]]]:
    """Every fixture of a vendor, as (case name, fixture), sorted by name."""
    cases = []
    for path in sorted((FIXTURES / vendor).glob("*.json")):
        fixture = json.loads(path.read_text(encoding="utf-8"))
        fixture["source"].setdefault("vendor", vendor)
        cases.append((path.stem, fixture))
    return cases


def context_for(fixture: dict[str, Any]) -> SourceContext:
    """The source context a fixture's payload was received in."""
    source = fixture["source"]
    return SourceContext(
        name=source["name"],
        vendor=source["vendor"],
        tz=ZoneInfo(source["timezone"]),
        received_at=datetime.fromisoformat(fixture["received_at"].replace("Z", "+00:00")),
        extension_max_digits=source.get("extension_max_digits", 5),
    )


def payload_for(fixture: dict[str, Any]) -> Payload:
    """The request a fixture describes; the JSON body is encoded the same way every time."""
    if "query" in fixture:
        return Payload(query=fixture["query"], path=fixture.get("path", ""))
    body = json.dumps(fixture["payload"], ensure_ascii=False, separators=(",", ":"))
    return Payload(
        body=body.encode(), content_type="application/json", path=fixture.get("path", "")
    )


def rewrite(paths: list[Path]) -> None:
    """Write each fixture's ``events`` as the normaliser makes them now (``make fixtures``).

    For a deliberate change of mapping: review the diff, since the fixtures are the
    specification the tests hold the normalisers to.
    """
    from bridge.vendors.registry import STREAMS, VENDORS

    normalizers = {
        **{name: vendor.normalize for name, vendor in VENDORS.items()},
        **{f"{name}_realtime": normalize for name, normalize in STREAMS.items()},
    }
    import msgspec

    for path in paths:
        fixture = json.loads(path.read_text(encoding="utf-8"))
        source = dict(fixture["source"])
        source.setdefault("vendor", path.parent.name)
        normalize = normalizers[path.parent.name]
        events = normalize(payload_for(fixture), context_for({**fixture, "source": source}))
        fixture["events"] = msgspec.to_builtins(events)
        text = json.dumps(fixture, indent=2, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    import sys

    rewrite([Path(arg) for arg in sys.argv[1:]] or sorted(FIXTURES.glob("*/*.json")))
