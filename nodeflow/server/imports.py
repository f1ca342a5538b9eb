"""``POST /api/import``: a workflow file in any format a plugin imports, as a nodeflow workflow.

The body is the file as it is (a ComfyUI ``.json`` in either format, a ComfyUI or nodeflow PNG,
a nodeflow workflow). The answer is ``{"workflow", "format", "warnings"}``, or 400 with
``{"errors": [...]}`` located like validation errors, so the editor (or any client) can open
what it is given without knowing the other formats. Nothing is run or stored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from nodeflow.errors import WorkflowInvalid
from nodeflow.imports import load_bytes
from nodeflow.server.errors import json_error

if TYPE_CHECKING:
    from nodeflow.server.app import Server


def add_import_route(app: web.Application, server: Server) -> None:
    async def import_workflow(request: web.Request) -> web.Response:
        limit = server.config.max_upload_bytes
        if request.content_length and request.content_length > limit:
            return json_error(413, f"file over {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"file over {limit} bytes")
        loaders = server.catalog.loaders
        try:
            # off the event loop: a big file takes a moment to parse and translate
            imported = await asyncio.get_running_loop().run_in_executor(
                None, load_bytes, body, loaders, None
            )
        except WorkflowInvalid as exc:
            return web.json_response({"errors": [i.to_json() for i in exc.issues]}, status=400)
        return web.json_response(
            {
                "workflow": imported.workflow.to_json(),
                "format": imported.format,
                "warnings": [w.to_json() for w in imported.warnings],
            }
        )

    app.router.add_post("/api/import", import_workflow)
