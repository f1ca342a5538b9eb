"""ComfyUI's websocket, ``/ws?clientId=``: the engine's events told in ComfyUI's messages.

The same hub as ``/api/ws`` (per-client outboxes, never blocking the worker), with ComfyUI's
greeting (``status`` with the client's ``sid``), its messages and its binary preview frames
(``u32 event 1 | u32 image format 1 = JPEG | image``). Messages about a prompt go to the client
that queued it when it is connected (as ComfyUI does), else to everyone; ``status`` to everyone.

Node ids are the ComfyUI prompt's: a ComfyUI node that became several nodeflow nodes (KSampler:
Scheduler, CFG and Denoise) is one ``executing`` for its ComfyUI id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from nodeflow import events as ev
from nodeflow.server.hub import Hub, Outbox, _Client

PREVIEW_IMAGE, JPEG = 1, 1
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass
class RunInfo:
    """What a ComfyUI-submitted run needs to be told in ComfyUI's terms."""

    prompt_id: str
    client_id: str | None
    node_ids: dict[str, str]
    """nodeflow node id -> ComfyUI node id."""
    node_types: dict[str, str] = field(default_factory=dict)
    """ComfyUI node id -> its class type."""
    executing: str | None = None
    cached: set[str] = field(default_factory=set)
    executed: list[str] = field(default_factory=list)
    error: ev.NodeError | None = None

    def comfy_id(self, node: str | None) -> str | None:
        return None if node is None else self.node_ids.get(node, node)


def now_ms() -> int:
    return int(time.time() * 1000)


class ComfyHub(Hub):
    """The hub of ``/ws``: ComfyUI's client ids, messages addressed to one client, its frames."""

    def __init__(self, queue_remaining: Any = lambda: 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue_remaining = queue_remaining
        self.preview_owner: dict[str, str | None] = {}
        """run id -> the client its previews go to."""

    def send(self, kind: str, data: dict[str, Any], client_id: str | None = None) -> None:
        """Send ``{"type": kind, "data": data}`` (thread-safe); to ``client_id`` if connected."""
        text = json.dumps({"type": kind, "data": data}, separators=(",", ":"), default=str)
        self._call_soon(self._deliver, text, client_id, kind == "progress")

    def status(self) -> None:
        self.send("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}})

    def _deliver(self, payload: str | bytes, client_id: str | None, droppable: bool) -> None:
        client = self._clients.get(client_id) if client_id else None
        if client is None:
            self._fan_out(payload, droppable)
        else:
            self._offer(client, payload, droppable)

    def _preview_encoded(self, future: asyncio.Future[bytes], header: dict[str, Any]) -> None:
        self._pending_encodes -= 1
        if future.cancelled() or future.exception() is not None:
            return
        frame = struct.pack(">II", PREVIEW_IMAGE, JPEG) + future.result()
        self._deliver(frame, self.preview_owner.get(header["run_id"]), True)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        if self._loop is None:
            self.attach(asyncio.get_running_loop())
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.max_message_bytes)
        await ws.prepare(request)
        wanted = request.query.get("clientId", "")
        client_id = wanted if CLIENT_ID.fullmatch(wanted) else uuid.uuid4().hex
        if client_id in self._clients:  # a reconnect with the same id replaces the old socket
            self._abort_client(self._clients[client_id])
        client = _Client(client_id, ws, request, Outbox(self.max_queue, self.hard_cap))
        greeting = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        greeting["sid"] = client_id
        client.outbox.offer(json.dumps({"type": "status", "data": greeting}), droppable=False)
        self._clients[client_id] = client
        client.sender = asyncio.create_task(self._send_loop(client))
        client.wakeup.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break
        finally:
            client.closed = True
            self._unregister(client)
            client.sender.cancel()
            await asyncio.wait({client.sender})
            if not ws.closed:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(ws.close(), timeout=2)
        return ws


class EventTranslator:
    """Engine events of ComfyUI-submitted runs -> ComfyUI's messages on a ``ComfyHub``."""

    def __init__(self, hub: ComfyHub, info: Any) -> None:
        self.hub = hub
        self.info = info
        """``info(run_id) -> RunInfo | None`` (None: not a ComfyUI run; it is not told)."""
        self.runs: dict[str, RunInfo] = {}

    def __call__(self, event: ev.Event) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            if not isinstance(event, ev.RunStarted):
                return
            run = self.info(event.run_id)
            if run is None:
                return
            self.runs[event.run_id] = run
            self.hub.preview_owner[event.run_id] = run.client_id
        send = lambda kind, data: self.hub.send(  # noqa: E731
            kind, {**data, "prompt_id": run.prompt_id}, run.client_id
        )
        match event:
            case ev.RunStarted():
                self.hub.status()
                send("execution_start", {"timestamp": now_ms()})
            case ev.NodeCached(node=node):
                comfy = run.comfy_id(node)
                if comfy not in run.cached:
                    run.cached.add(comfy)
                    send("execution_cached", {"nodes": [comfy], "timestamp": now_ms()})
            case ev.NodeStarted(node=node):
                comfy = run.comfy_id(node)
                if comfy != run.executing:
                    run.executing = comfy
                    run.executed.append(comfy)
                    send("executing", {"node": comfy, "display_node": comfy})
            case ev.NodeProgress(node=node, value=value, max=maximum):
                send("progress", {"value": value, "max": maximum, "node": run.comfy_id(node)})
            case ev.NodePreview():
                self.hub.publish(event)
            case ev.NodeFinished(node=node, report=report) if report:
                comfy = run.comfy_id(node)
                output = comfy_output(report)
                send("executed", {"node": comfy, "display_node": comfy, "output": output})
            case ev.NodeError():
                run.error = event
            case ev.RunFinished():
                self._end(run, event)
                send("execution_success", {"timestamp": now_ms()})
                send("executing", {"node": None})
            case ev.RunFailed(node=node, message=message):
                self._end(run, event)
                comfy = run.comfy_id(node)
                send(
                    "execution_error",
                    {
                        "node_id": comfy,
                        "node_type": run.node_types.get(comfy or "", ""),
                        "executed": run.executed[:-1],
                        "exception_message": message,
                        "exception_type": run.error.exception_type if run.error else "",
                        "traceback": run.error.traceback.splitlines() if run.error else [],
                        "current_inputs": {},
                        "current_outputs": {},
                        "timestamp": now_ms(),
                    },
                )
                send("executing", {"node": None})
            case ev.RunCancelled(node=node):
                self._end(run, event)
                comfy = run.comfy_id(node)
                send(
                    "execution_interrupted",
                    {
                        "node_id": comfy,
                        "node_type": run.node_types.get(comfy or "", ""),
                        "executed": run.executed,
                        "timestamp": now_ms(),
                    },
                )
                send("executing", {"node": None})

    def _end(self, run: RunInfo, event: ev.Event) -> None:
        self.runs.pop(event.run_id, None)
        self.hub.preview_owner.pop(event.run_id, None)
        self.hub.status()


def comfy_output(report: dict[str, Any]) -> dict[str, Any]:
    """A node's report as ComfyUI's ``output``: server paths left out, previews are ``temp``."""
    output = {k: v for k, v in report.items() if k != "files"}
    images = output.get("images")
    if isinstance(images, list):
        output["images"] = [
            {
                "filename": image.get("filename"),
                "subfolder": image.get("subfolder", "") if image.get("subfolder") != "." else "",
                "type": "temp" if image.get("type") == "preview" else image.get("type", "output"),
            }
            for image in images
            if isinstance(image, dict)
        ]
    return output
