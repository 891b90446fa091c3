"""The API contract: ``GET /v1/openapi.json``, an OpenAPI 3.1 document of every endpoint.

The document is ``openapi.json`` beside this module, with three things filled in when served:

- the event schema, ``bridge/schema/event.schema.json`` (the published one, not a copy): its
  ``$defs`` become ``components/schemas/Event*`` and its ``#/$defs/x`` references are rewritten
  to match, since OpenAPI tools resolve references against the whole document;
- the only configured number in it, ``api.page_limit_max``: the ``maximum`` of each schema
  marked ``"x-bound": "api.page_limit_max"`` (the ``limit`` of events and calls pages);
- the status page's files, from :data:`bridge.api.page.FILES` (the list it serves).

So the document holds no data and needs no token. The tests hold it to the code: every route
the app registers is in it, its bounds are the code's constants, and a live daemon's answers
conform to it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Final

from aiohttp import web

from bridge import __version__
from bridge.api import page
from bridge.api.routes import ACCESS

Json = dict[str, Any]

PATH: Final = "/v1/openapi.json"
_BOUND: Final = "x-bound"


def _read(package: str, name: str) -> Json:
    loaded: Json = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    return loaded


def _rewrite(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, str) and target.startswith("#/$defs/"):
            return {
                **node,
                "$ref": f"#/components/schemas/{names[target.removeprefix('#/$defs/')]}",
            }
        return {key: _rewrite(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(item, names) for item in node]
    return node


def event_schemas() -> dict[str, Json]:
    """The event schema as OpenAPI components: ``Event`` and an ``Event<Def>`` per ``$defs``."""
    schema = _read("bridge", "schema/event.schema.json")
    defs: dict[str, Json] = schema.pop("$defs", {})
    for key in ("$schema", "$id"):  # an $id would make its references relative to itself
        schema.pop(key, None)
    names = {name: f"Event{name[:1].upper()}{name[1:]}" for name in defs}
    shown: dict[str, Json] = {names[name]: _rewrite(body, names) for name, body in defs.items()}
    shown["Event"] = _rewrite(schema, names)
    return shown


def _bound(node: Any, page_limit_max: int) -> Any:
    if isinstance(node, dict):
        bounded = {key: _bound(value, page_limit_max) for key, value in node.items()}
        if bounded.pop(_BOUND, None) == "api.page_limit_max":
            bounded["maximum"] = page_limit_max
        return bounded
    if isinstance(node, list):
        return [_bound(item, page_limit_max) for item in node]
    return node


def page_paths() -> dict[str, Json]:
    """The status page and its files: no token, no data (the page asks the API with one)."""
    paths = {}
    for path, (name, content_type) in page.FILES.items():
        summary = "The status page" if path == "/" else f"The status page's {name}"
        content = {content_type: {"schema": {"type": "string"}}}
        paths[path] = {
            "get": {
                "tags": ["operations"],
                "operationId": "status_page" if path == "/" else f"status_page_{name}",
                "summary": summary,
                "security": [],
                "responses": {"200": {"description": summary, "content": content}},
            }
        }
    return paths


@cache
def _encoded(page_limit_max: int) -> bytes:
    return json.dumps(document(page_limit_max), separators=(",", ":")).encode()


def document(page_limit_max: int = 1000) -> Json:
    """The OpenAPI document as served with this ``api.page_limit_max`` (a fresh copy)."""
    spec: Json = _bound(_read("bridge.api", "openapi.json"), page_limit_max)
    spec["info"]["version"] = __version__
    spec["components"]["schemas"].update(event_schemas())
    spec["paths"].update(page_paths())
    return spec


async def serve(request: web.Request) -> web.Response:
    # Read per request: a reload may change the bound (each bound is encoded once).
    limit = request.app[ACCESS].config.page_limit_max
    return web.Response(body=_encoded(limit), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, serve)
