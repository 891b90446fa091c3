"""Where vendor payloads come in: HTTP ingest (and, later, realtime clients)."""
