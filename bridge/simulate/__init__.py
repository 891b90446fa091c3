"""Simulators that play vendor PBXs against a running bridge (loopback only)."""
