"""Vendor normalisers: one module per vendor, pure functions from payloads to events."""
