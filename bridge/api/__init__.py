"""The consumer side: the hub of live events and the HTTP/SSE/WebSocket endpoints."""
