"""The HTTP API: JSON under /api, events over /api/ws (the route table of DESIGN.md).

Every submitted workflow is validated before it is queued: a bad one gets 400 with every issue
and is never queued, so it can neither take the server down nor disturb the runs behind it.
Every other refusal is ``{"error": ...}`` (see :mod:`nodeflow.server.errors`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

import nodeflow
from nodeflow import events as ev
from nodeflow.context import Environment
from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog
from nodeflow.provenance import stamp
from nodeflow.server import runlog, security
from nodeflow.server.comfy_api import ComfyApi
from nodeflow.server.editor import Editor
from nodeflow.server.errors import error_middleware, json_error
from nodeflow.server.hub import Hub
from nodeflow.server.imports import add_import_route
from nodeflow.server.outputs import outputs_with_urls, report_with_urls
from nodeflow.server.plugins import add_extension_routes, add_plugin_routes
from nodeflow.server.store import RunRecord, RunStore
from nodeflow.server.worker import Worker, Workers
from nodeflow.validate import validate
from nodeflow.workflow import Workflow

log = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish when the server stops (aiohttp's default is 60).
#: Every API request takes milliseconds and runs live in the store, not in requests, so only a
#: stalled client (an upload that stopped sending) is still going after a moment; it must not
#: keep a stopping server alive for a minute.
SHUTDOWN_TIMEOUT = 0.5

MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"}
#: A model kind is a models-dir subfolder name (checkpoints, loras, clip_vision, ...). Bounded,
#: so no request can ask the file system for a name longer than it allows.
MODEL_KIND = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_upload_bytes: int = 32 * 1024 * 1024
    extra_hosts: set[str] = field(default_factory=set)
    web_dir: Path | None = None
    """The editor's built bundle (default: the repository's ``web/dist``)."""
    workflows_dir: Path | None = None
    """Example workflows the editor offers (default: the repository's ``workflows/``)."""


class Server:
    """Holds what the routes share: catalog, store, executor, worker and hub."""

    def __init__(
        self,
        catalog: Catalog,
        executor: Executor,
        store: RunStore,
        config: ServerConfig | None = None,
        workers: Callable[..., Workers] = Worker,
    ) -> None:
        """``workers`` builds what runs the queue: one thread on ``executor`` by default, or a
        pool of Ray actors (``functools.partial(RayPool, config=...)``)."""
        self.catalog = catalog
        self.executor = executor
        self.env: Environment = executor.env
        self.store = store
        self.config = config or ServerConfig()
        self.hub = Hub()
        self.worker = workers(executor, store, publish=self._publish, on_change=self.hub.broadcast)
        self.comfy = ComfyApi(self)  # ComfyUI's API beside ours: /prompt, /history, /ws, ...

    def app(self) -> web.Application:
        hosts = security.loopback_hosts(self.config.port) | self.config.extra_hosts
        app = web.Application(
            client_max_size=self.config.max_upload_bytes,
            middlewares=[
                error_middleware(),  # outermost: it answers for the others and the router too
                security.origin_middleware(hosts),
                security.token_middleware(self.config.token),
            ],
        )
        app.router.add_get("/api/nodes", self.nodes)
        app.router.add_get("/api/types", self.types)
        app.router.add_post("/api/runs", self.submit)
        app.router.add_get("/api/runs", self.runs)
        app.router.add_get("/api/runs/{run_id}", self.run)
        app.router.add_post("/api/runs/{run_id}/cancel", self.cancel)
        app.router.add_post("/api/interrupt", self.interrupt)
        app.router.add_get("/api/files/{kind:output|input}/{path:.+}", self.file)
        app.router.add_post("/api/uploads", self.upload)
        app.router.add_get("/api/models/{kind}", self.models)
        app.router.add_get("/api/system", self.system)
        app.router.add_get("/api/ws", self.hub.handler)
        Editor(self.config.web_dir, self.config.workflows_dir, self.catalog, self.env).add_routes(
            app
        )
        add_extension_routes(app, self.catalog)
        add_plugin_routes(app, self.catalog, self.executor)  # /api/plugins/<plugin>/...
        self.comfy.add_routes(app)
        add_import_route(app, self)  # POST /api/import: ComfyUI files and PNGs, translated
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self.hub.attach(asyncio.get_running_loop())
        for run_id in self.store.recover():
            log.warning("run %s was executing when the server last stopped: interrupted", run_id)
        self.worker.start()

    async def _stop(self, app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        await self.hub.close()

    def _publish(self, event: ev.Event) -> None:
        """Forward an engine event to the websockets, with URLs on the pictures it reports."""
        self.comfy.publish(event)
        if isinstance(event, ev.NodeFinished) and event.report:
            event = dataclasses.replace(event, report=report_with_urls(event.report))
        self.hub.publish(event)

    # --- catalog ---------------------------------------------------------------------------

    async def nodes(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.to_json()["nodes"])

    async def types(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.to_json()["types"])

    # --- runs ------------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        if request.content_length and request.content_length > self.config.max_body_bytes:
            return json_error(413, f"request body over {self.config.max_body_bytes} bytes")
        body = await request.read()
        if len(body) > self.config.max_body_bytes:
            return json_error(413, f"request body over {self.config.max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except RecursionError:  # the parser gives up on deep nesting; the client sent it
            return _request_issues("json_syntax", "request body is JSON nested too deeply")
        except ValueError as exc:  # UnicodeDecodeError included
            return _request_issues("json_syntax", f"request body is not JSON: {exc}")
        if not isinstance(data, dict) or "workflow" not in data:
            return _request_issues("format", 'expected {"workflow": {...}, "targets"?, "front"?}')
        unknown = set(data) - {"workflow", "targets", "front"}
        targets = data.get("targets")
        front = data.get("front", False)
        problems = []
        if unknown:
            problems.append(f"unknown keys {sorted(unknown)}")
        if targets is not None and not (
            isinstance(targets, list) and all(isinstance(t, str) for t in targets)
        ):
            problems.append("targets must be a list of node ids")
        if not isinstance(front, bool):
            problems.append("front must be true or false")
        if problems:
            return _request_issues("format", *problems)
        try:
            workflow = Workflow.from_json(data["workflow"])
        except WorkflowInvalid as exc:
            return _issues(400, [i.to_json() for i in exc.issues])
        _, issues = validate(workflow, self.catalog, targets, self.env)
        if issues:
            return _issues(400, [i.to_json() for i in issues])
        # stored as run: naming the plugins (and versions) its node types came from
        stored = stamp(workflow, self.catalog).to_json()
        record, position = self.store.submit(stored, targets, front=front)
        runlog.queued(record.run_id, len(workflow.nodes), position)
        self.worker.notify()
        self.hub.broadcast(self.worker.queue_message())
        return web.json_response({"run_id": record.run_id, "position": position}, status=201)

    async def runs(self, request: web.Request) -> web.Response:
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
            if limit < 0:  # SQLite reads a negative LIMIT as "no limit"
                raise ValueError("limit must be 0 or more")
            status = request.query.get("status")
            records = self.store.history(limit=limit, status=status)
        except ValueError as exc:
            return json_error(400, str(exc))
        return web.json_response({"runs": [_summary(_served(r)) for r in records]})

    async def run(self, request: web.Request) -> web.Response:
        record = self.store.get(request.match_info["run_id"])
        if record is None:
            return json_error(404, "no such run")
        data = _served(record)
        data["position"] = self.store.position(record.run_id)
        return web.json_response(data)

    async def cancel(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if self.store.cancel(run_id):
            record = self.store.get(run_id)
            if record is not None:
                runlog.cancelled_in_queue(run_id, time.time() - record.submitted_at)
            self.hub.broadcast(self.worker.queue_message())
            return web.json_response({"run_id": run_id, "status": "cancelled"})
        if self.worker.interrupt(run_id):
            return web.json_response({"run_id": run_id, "status": "interrupting"})
        record = self.store.get(run_id)
        if record is None:
            return json_error(404, "no such run")
        return json_error(
            409, f"run is {record.status}; only queued or running runs can be cancelled"
        )

    async def interrupt(self, request: web.Request) -> web.Response:
        return web.json_response({"interrupted": self.worker.interrupt()})

    # --- files -----------------------------------------------------------------------------

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            path = self._served_file(request.match_info["kind"], request.match_info["path"])
        except security.PathRefused as exc:
            return json_error(exc.status, str(exc))
        content_type, headers = security.safe_content_type(path)
        response = web.FileResponse(path, headers=headers)
        response.content_type = content_type
        return response

    def _served_file(self, kind: str, relative: str) -> Path:
        """The file ``/api/files/<kind>/<relative>`` serves. An input name is looked up in the
        folders the ``input`` file kind's nodes resolve it in (a plugin's ``FileKind``: the input
        folder, then e.g. the pack's bundled example pictures), so the editor can show what the
        run will use; each folder with the containment checks of ``security.contained_file``."""
        if kind == "output":
            return security.contained_file(self.env.output_dir, relative)
        file_kind = self.catalog.loaders.file_kind("input")
        folders = [self.env.input_dir]
        if file_kind is not None:
            folders += [f for f in file_kind.folders(self.env) if f != self.env.input_dir]
        for folder in folders:
            try:
                return security.contained_file(folder, relative)
            except security.PathRefused as exc:
                if exc.status != 404:
                    raise  # a refused name is refused whatever the folder
        raise security.PathRefused(404, "file not found")

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return json_error(415, 'expected multipart/form-data with a field named "image"')
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and getattr(part, "name", None) != "image":
                part = await reader.next()
            if part is None:
                return json_error(400, 'expected a multipart field named "image"')
            data = await part.read(decode=False)
        except (ValueError, AssertionError) as exc:
            return json_error(400, f"malformed upload: {exc}")
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"upload over {self.config.max_upload_bytes} bytes")
        try:
            security.check_image_upload(data, self.config.max_upload_bytes)
        except security.UploadRefused as exc:
            return json_error(exc.status, str(exc))
        # clients may percent-encode the name (aiohttp's does); sanitising comes after decoding
        name = security.safe_upload_name(unquote(part.filename or "upload.png"))
        self.env.input_dir.mkdir(parents=True, exist_ok=True)
        target = self.env.input_dir / name
        stem, suffix = target.stem, target.suffix
        counter = 1
        while target.exists():
            target = self.env.input_dir / f"{stem}_{counter}{suffix}"
            counter += 1
        target.write_bytes(data)
        return web.json_response({"name": target.name}, status=201)

    # --- models and system -----------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if not MODEL_KIND.fullmatch(kind):
            return json_error(400, "invalid model kind: letters, digits and _ only, at most 64")
        names = []
        for folder in self.env.model_dirs(kind):  # extra_model_paths.yaml's folders too
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry.is_dir() or entry.suffix.lower() in MODEL_SUFFIXES:
                        names += [entry.name] if entry.name not in names else []
        # The names a plugin's nodes resolve without a file (the pack's demo models), so the
        # editor's file choices offer them on an empty models folder too; a file of that name
        # is listed once, as the file it is.
        file_kind = self.catalog.loaders.file_kind(kind)
        built_in = dict(file_kind.built_in) if file_kind is not None else {}
        names += [name for name in built_in if name not in names]
        return web.json_response({"kind": kind, "models": names, "built_in": built_in})

    async def system(self, request: web.Request) -> web.Response:
        data = self.catalog.to_json()
        runtime = self.executor.runtime
        return web.json_response(
            {
                "versions": {
                    "nodeflow": nodeflow.__version__,
                    "plugin_api": nodeflow.PLUGIN_API_VERSION,
                    "python": platform.python_version(),
                    "torch": _module_version("torch"),
                    "diffusers": _module_version("diffusers"),
                },
                "device": {
                    "requested": runtime.device_name,
                    "vram_budget": runtime.vram_budget,  # bytes; null: the device's default
                    **_device_memory(),
                },
                "plugins": data["plugins"],
                "failed_plugins": data["failures"],
                "disabled_plugins": data["disabled"],
                "queue": self.worker.queue_message(),
            }
        )


def _module_version(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__version__", None) if module else None


def _device_memory() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"cuda": False}
    free, total = torch.cuda.mem_get_info()
    return {"cuda": True, "name": torch.cuda.get_device_name(), "free": free, "total": total}


def _served(record: RunRecord) -> dict[str, Any]:
    """A run record as the API shows it: pictures in its outputs carry a ready ``url``."""
    data = record.to_json()
    data["outputs"] = outputs_with_urls(data["outputs"])
    return data


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "workflow"}


def _issues(status: int, issues: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"errors": issues}, status=status)


def _request_issues(code: str, *messages: str) -> web.Response:
    """400 with issues about the request itself (no node or input to point at)."""
    return _issues(400, [Issue(None, None, code, message).to_json() for message in messages])


def default_db(env: Environment) -> Path:
    return env.output_dir.parent / "nodeflow-runs.sqlite3"
