"""Serving the editor's built bundle at ``/`` and the example workflows it offers.

The bundle is built from ``web/`` (see ``web/README.md``) into ``web/dist`` and committed, so
users need no Node.js. Its files are served with real script and style types (unlike produced or
uploaded files, which are only ever served inert) because they are ours, from a folder users do not
write to, under a policy that lets the page load nothing but its own origin's code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeflow.context import Environment
from nodeflow.plugins import Catalog
from nodeflow.server import security

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WEB_DIR = REPO / "web" / "dist"
DEFAULT_WORKFLOWS_DIR = REPO / "workflows"

EDITOR_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".woff2": "font/woff2",
    ".png": "image/png",
    ".json": "application/json",
}


class Editor:
    def __init__(
        self,
        web_dir: Path | None,
        workflows_dir: Path | None,
        catalog: Catalog | None = None,
        env: Environment | None = None,
    ) -> None:
        self.web_dir = web_dir or DEFAULT_WEB_DIR
        self.workflows_dir = workflows_dir or DEFAULT_WORKFLOWS_DIR
        self.catalog = catalog
        self.env = env

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/assets/{path:.+}", self.asset)
        app.router.add_get("/api/workflows", self.workflows)
        app.router.add_get("/api/workflows/{name}", self.workflow)

    async def index(self, request: web.Request) -> web.StreamResponse:
        index = self.web_dir / "index.html"
        if not index.is_file():
            return web.Response(
                status=503,
                text=f"The editor is not built ({index} is missing). Build it with: "
                "npm --prefix web ci && npm --prefix web run build\n",
            )
        headers = {"Content-Security-Policy": EDITOR_CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}  # fmt: skip
        return web.FileResponse(index, headers=headers)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        try:
            path = security.contained_file(self.web_dir / "assets", request.match_info["path"])
        except security.PathRefused as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        content_type = ASSET_TYPES.get(path.suffix.lower())
        if content_type is None:
            return web.json_response({"error": "not an editor asset"}, status=404)
        # Vite names assets by content hash, so a name never changes meaning.
        headers = {"X-Content-Type-Options": "nosniff",
                   "Cache-Control": "public, max-age=31536000, immutable"}  # fmt: skip
        response = web.FileResponse(path, headers=headers)
        response.content_type = content_type
        return response

    async def workflows(self, request: web.Request) -> web.Response:
        names = []
        if self.workflows_dir.is_dir():
            names = sorted(p.name for p in self.workflows_dir.glob("*.json") if p.is_file())
        answer: dict[str, Any] = {"workflows": names}
        if self.catalog is not None:
            answer["examples"] = [
                {"name": name, "test_models": self._test_models(self.workflows_dir / name)}
                for name in names
            ]
        return web.json_response(answer)

    def _test_models(self, path: Path) -> dict[str, str]:
        """The built-in names the workflow picks whose description says they are random test
        models (the pack describes each built-in name: "trained demo model" or "random tiny test
        model"), each with that description: such an example runs but draws noise."""
        assert self.catalog is not None
        try:
            workflow = json.loads(path.read_text(encoding="utf-8"))
            nodes = workflow["nodes"].values()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}
        found: dict[str, str] = {}
        for node in nodes:
            spec = self.catalog.spec(node.get("type", "")) if isinstance(node, dict) else None
            inputs = node.get("inputs") if spec is not None else None
            for name, value in (inputs or {}).items() if isinstance(inputs, dict) else ():
                input_spec = spec.inputs.get(name)
                files = input_spec.files if input_spec is not None else None
                kind = self.catalog.loaders.file_kind(files) if files else None
                described = kind.built_in.get(value) if kind and isinstance(value, str) else None
                if described is None or "random" not in described.lower():
                    continue
                if self.env is not None and kind.find(value, self.env) != value:
                    continue  # a file of that name is there: it wins over the built-in model
                found[value] = described
        return found

    async def workflow(self, request: web.Request) -> web.Response:
        try:
            path = security.contained_file(self.workflows_dir, request.match_info["name"])
        except security.PathRefused as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        if path.suffix != ".json":
            return web.json_response({"error": "not a workflow"}, status=404)
        try:
            return web.json_response(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            return web.json_response({"error": f"{path.name}: {exc}"}, status=500)
