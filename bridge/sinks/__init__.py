"""Sinks: where committed events are pushed (webhooks, NATS JetStream)."""
