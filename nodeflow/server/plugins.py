"""What plugins add to the server: routes under ``/api/plugins/<plugin>/`` and editor extensions.

Each plugin gets a router of its own that can only add routes under its own prefix, so plugins
cannot shadow the API or each other. Routes are added only when a plugin's ``nodeflow_routes``
returns normally: one that raises halfway adds nothing, is recorded in the catalog's failures
(shown by ``/api/system``) and the server starts without it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nodeflow.context import Environment
from nodeflow.plugins import Catalog, call_each, failure
from nodeflow.server import security

if TYPE_CHECKING:
    from nodeflow.executor import Executor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
EXTENSION_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
}
"""What an extension folder may serve, with real types (scripts must run as scripts). Anything
else, HTML and SVG included, is refused: an extension's page is the editor's page."""
_PATH = re.compile(r"^/[A-Za-z0-9_{}:.+*\\/-]*$")


@dataclass
class ServerContext:
    """What a plugin's routes may use: the server's catalog, executor and folders, and the
    aiohttp app (``context.app.on_cleanup.append(...)`` to release what the routes hold)."""

    plugin: str
    catalog: Catalog
    executor: Executor
    env: Environment
    app: web.Application


@dataclass
class PluginRoutes:
    """A router confined to ``/api/plugins/<plugin>``: paths are given relative to it."""

    plugin: str
    routes: list[tuple[str, str, Handler]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"/api/plugins/{self.plugin}"

    def add(self, method: str, path: str, handler: Handler) -> str:
        """Add a route; returns its full path. ``path`` may use aiohttp's ``{name}`` patterns."""
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"method {method!r} is not one of {sorted(METHODS)}")
        if not path.startswith("/"):
            path = "/" + path
        if not _PATH.match(path) or ".." in path:
            raise ValueError(f"route path {path!r} is not a plain relative URL path")
        if not callable(handler):
            raise TypeError(f"route {path!r}: handler {handler!r} is not callable")
        full = self.prefix + path.rstrip("/") if path != "/" else self.prefix + "/"
        self.routes.append((method, full, handler))
        return full

    def get(self, path: str, handler: Handler) -> str:
        return self.add("GET", path, handler)

    def post(self, path: str, handler: Handler) -> str:
        return self.add("POST", path, handler)


def add_plugin_routes(app: web.Application, catalog: Catalog, executor: Executor) -> None:
    """Call every plugin's ``nodeflow_routes``; add the routes of those that did not raise."""
    if catalog.manager is None:
        return
    routers: dict[str, PluginRoutes] = {}

    def arguments(plugin: str) -> dict[str, Any]:
        routers[plugin] = PluginRoutes(plugin)
        context = ServerContext(plugin, catalog, executor, executor.env, app)
        return {"routes": routers[plugin], "context": context}

    for plugin, _ in call_each(catalog.manager, catalog, "nodeflow_routes", per_plugin=arguments):
        for method, path, handler in routers[plugin].routes:
            try:
                app.router.add_route(method, path, handler)
            except Exception as exc:  # e.g. the same route twice
                catalog.failures.append(failure(catalog, plugin, "nodeflow_routes", exc))


def add_extension_routes(app: web.Application, catalog: Catalog) -> None:
    """``GET /api/extensions`` (what the editor loads) and ``/extensions/<plugin>/<path>``."""
    folders = {ext.plugin: ext.static for ext in catalog.web_extensions}

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"extensions": [e.to_json() for e in catalog.web_extensions]})

    async def static(request: web.Request) -> web.StreamResponse:
        folder = folders.get(request.match_info["plugin"])
        if folder is None:
            return web.json_response({"error": "no such extension"}, status=404)
        try:
            path = security.contained_file(folder, request.match_info["path"])
        except security.PathRefused as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        content_type = EXTENSION_TYPES.get(path.suffix.lower())
        if content_type is None:
            return web.json_response({"error": "not an extension asset"}, status=404)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        response = web.FileResponse(path, headers=headers)
        response.content_type = content_type
        return response

    app.router.add_get("/api/extensions", listing)
    app.router.add_get("/extensions/{plugin}/{path:.+}", static)
