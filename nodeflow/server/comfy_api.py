"""ComfyUI's HTTP API beside the native one, so scripts and client libraries written for ComfyUI
work unchanged: ``POST /prompt``, ``GET /history[/{id}]``, ``GET /view``, ``GET/POST /queue``,
``POST /interrupt``, ``GET /object_info[/{class}]``, ``GET /system_stats``,
``POST /upload/image`` and the websocket ``/ws`` (:mod:`nodeflow.server.comfy_ws`).

A thin translation: a prompt is turned into a nodeflow workflow by the importer a plugin
registers (``workflow_importer.comfyui``, the diffusion pack's), validated like any submission
and queued in the same store for the same worker. No second queue, no second executor. The
ComfyUI prompt, its client and its node ids ride along in the workflow's ``ui.comfyui``, so
history and events speak in the prompt's ids, across restarts too. The prompt id is the run id.
The server's Origin/Host and token checks apply to these routes as to every other.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

import nodeflow
from nodeflow import events as ev
from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.imports import importers
from nodeflow.provenance import stamp
from nodeflow.server import runlog, security
from nodeflow.server.comfy_shapes import (
    describe_node,
    history_entry,
    node_errors_response,
    queue_item,
    refusal,
    run_meta,
)
from nodeflow.server.comfy_ws import ComfyHub, EventTranslator, RunInfo
from nodeflow.server.store import RunRecord
from nodeflow.validate import validate

if TYPE_CHECKING:
    from nodeflow.server.app import Server

PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ComfyApi:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.hub = ComfyHub(queue_remaining=self.queue_remaining)
        self.pending: dict[str, RunInfo] = {}
        """Queued ComfyUI runs, told in ComfyUI's terms once they start. Kept here, not read
        from the store when a run starts, so the worker's thread never waits for it."""
        self.translate_events = EventTranslator(
            self.hub, lambda run_id: self.pending.pop(run_id, None)
        )
        self.numbers = itertools.count(int(time.time()) % 1_000_000)

    def add_routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("POST", "/prompt", self.prompt)
        add("GET", "/prompt", self.prompt_status)
        add("GET", "/history", self.history)
        add("GET", "/history/{prompt_id}", self.history_one)
        add("GET", "/view", self.view)
        add("GET", "/queue", self.queue)
        add("POST", "/queue", self.edit_queue)
        add("POST", "/interrupt", self.interrupt)
        add("GET", "/object_info", self.object_info)
        add("GET", "/object_info/{node_class}", self.object_info_one)
        add("GET", "/system_stats", self.system_stats)
        add("POST", "/upload/image", self.upload_image)
        add("GET", "/embeddings", self.embeddings)
        add("GET", "/ws", self.hub.handler)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        import asyncio

        self.hub.attach(asyncio.get_running_loop())
        for record in self.server.store.queue():  # queued before a restart
            info = self.run_info(record)
            if info is not None:
                self.pending[record.run_id] = info

    async def _stop(self, app: web.Application) -> None:
        await self.hub.close()

    def publish(self, event: ev.Event) -> None:
        """An engine event (worker thread): told to ComfyUI clients if its run is theirs."""
        self.translate_events(event)

    def queue_remaining(self) -> int:
        return len(self.server.store.queue()) + len(self.server.worker.running())

    def run_info(self, record: RunRecord) -> RunInfo | None:
        meta = run_meta(record)
        if meta is None:
            return None
        prompt = meta.get("prompt") or {}
        return RunInfo(
            prompt_id=record.run_id,
            client_id=meta.get("client_id"),
            node_ids=dict(meta.get("node_ids") or {}),
            node_types=_class_types(prompt),
        )

    # --- queueing ---------------------------------------------------------------------------

    async def prompt(self, request: web.Request) -> web.Response:
        limit = self.server.config.max_body_bytes
        body = await request.read()
        if len(body) > limit:
            return refusal(413, "request_too_large", f"request body over {limit} bytes")
        try:
            data = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            return refusal(400, "invalid_prompt", f"request body is not JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), dict):
            return refusal(400, "invalid_prompt", 'expected {"prompt": {...}, "client_id"?, ...}')
        prompt_id = data.get("prompt_id") or None
        client_id = data.get("client_id") or None
        extra = data.get("extra_data") if isinstance(data.get("extra_data"), dict) else {}
        if prompt_id is not None and not (
            isinstance(prompt_id, str) and PROMPT_ID.fullmatch(prompt_id)
        ):
            return refusal(400, "invalid_prompt", "prompt_id: letters, digits, - and _ (<= 128)")
        if client_id is not None and not isinstance(client_id, str):
            return refusal(400, "invalid_prompt", "client_id must be text")
        importer = importers(self.server.catalog.loaders).get("comfyui")
        if importer is None:
            return refusal(400, "invalid_prompt", "no plugin translates ComfyUI prompts here")
        native = {
            name: [output.name for output in spec.outputs]
            for name, spec in self.server.catalog.nodes.items()
        }
        try:
            imported = importer(data["prompt"], native=native)
            if imported is None:
                raise WorkflowInvalid([Issue(None, None, "format", "not a ComfyUI prompt")])
            workflow = imported.workflow
            _, issues = validate(workflow, self.server.catalog, None, self.server.env)
        except WorkflowInvalid as exc:
            return node_errors_response(exc.issues, data["prompt"], {})
        if issues:
            return node_errors_response(issues, data["prompt"], imported.origin)
        number = -next(self.numbers) if data.get("front") is True else next(self.numbers)
        outputs = sorted(
            {
                imported.origin.get(n, n)
                for n in workflow.nodes
                if _is_output(self.server, n, workflow)
            }
        )
        stored = stamp(workflow, self.server.catalog).to_json()
        stored.setdefault("ui", {}).setdefault("comfyui", {}).update(
            {"prompt": data["prompt"], "client_id": client_id, "extra_data": extra,
             "number": number, "outputs": outputs}
        )  # fmt: skip
        run_id = prompt_id or str(uuid.uuid4())
        info = RunInfo(run_id, client_id, dict(imported.origin), _class_types(data["prompt"]))
        self.pending[run_id] = info  # before it is queued: the worker may start it at once
        try:
            record, position = self.server.store.submit(
                stored, None, front=data.get("front") is True, run_id=run_id
            )
        except ValueError as exc:
            self.pending.pop(run_id, None)
            return refusal(400, "invalid_prompt", str(exc))
        runlog.queued(record.run_id, len(workflow.nodes), position)
        self.server.worker.notify()
        self.server.hub.broadcast(self.server.worker.queue_message())
        self.hub.status()
        return web.json_response({"prompt_id": record.run_id, "number": number, "node_errors": {}})

    async def prompt_status(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def queue(self, request: web.Request) -> web.Response:
        store = self.server.store
        running = [store.get(run_id) for run_id in self.server.worker.running()]
        return web.json_response(
            {
                "queue_running": [queue_item(r) for r in running if r is not None],
                "queue_pending": [queue_item(r) for r in store.queue()],
            }
        )

    async def edit_queue(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        store = self.server.store
        cancel = [r.run_id for r in store.queue()] if data.get("clear") is True else []
        deleted = data.get("delete")
        cancel += [i for i in deleted if isinstance(i, str)] if isinstance(deleted, list) else []
        for run_id in cancel:
            if store.cancel(run_id):
                self.pending.pop(run_id, None)
        self.server.hub.broadcast(self.server.worker.queue_message())
        self.hub.status()
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        prompt_id = data.get("prompt_id")
        self.server.worker.interrupt(prompt_id if isinstance(prompt_id, str) else None)
        return web.Response(status=200)

    # --- history and files ------------------------------------------------------------------

    async def history(self, request: web.Request) -> web.Response:
        try:
            limit = max(0, min(int(request.query.get("max_items", "200")), 10000))
        except ValueError:
            return refusal(400, "invalid_request", "max_items must be a number")
        records = [
            r for r in self.server.store.history(limit=limit) if history_entry(r) is not None
        ]
        return web.json_response({r.run_id: history_entry(r) for r in reversed(records)})

    async def history_one(self, request: web.Request) -> web.Response:
        record = self.server.store.get(request.match_info["prompt_id"])
        entry = history_entry(record) if record is not None else None
        return web.json_response({} if entry is None else {record.run_id: entry})

    async def view(self, request: web.Request) -> web.StreamResponse:
        env = self.server.env
        kind = request.query.get("type", "output")
        folders = {"output": env.output_dir, "temp": env.output_dir, "input": env.input_dir}
        name = request.query.get("filename", "")
        if kind not in folders or not name:
            return refusal(400, "invalid_request", "need filename and type output|input|temp")
        subfolder = request.query.get("subfolder", "").strip("/")
        relative = f"{subfolder}/{name}" if subfolder and subfolder != "." else name
        try:
            path = security.contained_file(folders[kind], relative)
        except security.PathRefused as exc:
            return refusal(exc.status, "invalid_request", str(exc))
        content_type, headers = security.safe_content_type(path)
        response = web.FileResponse(path, headers=headers)
        response.content_type = content_type
        return response

    async def upload_image(self, request: web.Request) -> web.Response:
        answer = await self.server.upload(request)
        if answer.status != 201:
            return answer
        name = json.loads(answer.text or "{}")["name"]
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    # --- description ------------------------------------------------------------------------

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self._object_info())

    async def object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self._object_info()
        return web.json_response({name: info[name]} if name in info else {})

    def _object_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        describe = self.server.catalog.loaders.get("comfyui.object_info")
        if describe is not None:
            info.update(describe(self.server.env))
        for name, spec in self.server.catalog.to_json()["nodes"].items():
            if name not in info:
                info[name] = describe_node(spec)
        return info

    async def embeddings(self, request: web.Request) -> web.Response:
        folder = self.server.env.models_dir / "embeddings"
        names = sorted(p.stem for p in folder.glob("*")) if folder.is_dir() else []
        return web.json_response(names)

    async def system_stats(self, request: web.Request) -> web.Response:
        torch = sys.modules.get("torch")
        devices = []
        if torch is not None and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            devices.append(
                {"name": torch.cuda.get_device_name(), "type": "cuda", "index": 0,
                 "vram_total": total, "vram_free": free,
                 "torch_vram_total": total, "torch_vram_free": free}
            )  # fmt: skip
        else:
            devices.append(
                {"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                 "torch_vram_total": 0, "torch_vram_free": 0}
            )  # fmt: skip
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        available = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "python_version": sys.version,
                    "embedded_python": False,
                    "comfyui_version": f"nodeflow {nodeflow.__version__}",
                    "pytorch_version": getattr(torch, "__version__", None),
                    "platform": platform.platform(),
                    "argv": ["nodeflow", "serve"],
                    "ram_total": pages * page,
                    "ram_free": available * page,
                },
                "devices": devices,
            }
        )


# --- helpers ------------------------------------------------------------------------------


def _class_types(prompt: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("class_type", "")) for k, v in prompt.items() if isinstance(v, dict)}


def _is_output(server: Server, node: str, workflow: Any) -> bool:
    spec = server.catalog.nodes.get(workflow.nodes[node].type)
    return bool(spec is not None and spec.output_node)


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body or len(body) > 1024 * 1024:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
