"""The status page: ``GET /`` and its script, style sheet and icon, from ``api/static/``.

The page is static and holds no data, so it is served without a token; every call it makes for
data carries the API token the operator typed in. The files are read once, at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

STATIC: Final = Path(__file__).parent / "static"

# URL path -> (file, content type). A fixed list, not a directory: nothing else is reachable.
FILES: Final = {
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

# The page's script and style come from here and nowhere else; no inline script or style (the
# page puts vendor text in with textContent, and this stops anything that slips through from
# running), no framing (clickjacking the re-drive button), and the login form cannot submit
# anywhere (with its script blocked it would otherwise put the token in a URL).
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new version's page and script go together
}


def _handler(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)

    return serve


def add_routes(app: web.Application) -> None:
    for path, (name, content_type) in FILES.items():
        app.router.add_get(path, _handler((STATIC / name).read_bytes(), content_type))
