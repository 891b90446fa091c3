"""The durable outbox: SQLite in WAL mode, one writer thread, many readers."""
