"""``make bench``: durable ingest against a bare aiohttp baseline, and ingest-to-SSE latency."""
