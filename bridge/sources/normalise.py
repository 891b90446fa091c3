"""Running a vendor's normaliser at a source: a normaliser bug is a refused payload, not a crash.

A normaliser is pure and should raise only :class:`PayloadError`; anything else is a bug in the
bridge. The payload is then treated like one that cannot be read (quarantined where the source
keeps a quarantine, counted and logged with the traceback), so the source keeps working and the
payload can be re-processed once the bug is fixed.
"""

from __future__ import annotations

import structlog

from bridge.errors import PayloadError
from bridge.events import Event
from bridge.vendors.base import Normalizer, Payload, SourceContext

log = structlog.get_logger("bridge.sources")


def normalise(normalize: Normalizer, payload: Payload, ctx: SourceContext) -> list[Event]:
    """The payload's events; :class:`PayloadError` for a payload that cannot be read."""
    try:
        return normalize(payload, ctx)
    except PayloadError:
        raise
    except Exception as exc:
        log.exception("normaliser_failed", source=ctx.name, vendor=ctx.vendor)
        raise PayloadError("", f"the bridge could not read it ({type(exc).__name__})") from exc
