"""pbx-bridge: PBX call events in, one durable normalised stream out."""

from __future__ import annotations

__version__ = "0.1.0"
