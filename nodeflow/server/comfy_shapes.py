"""ComfyUI's JSON shapes: history entries, queue items, node descriptions and error answers.

What :mod:`nodeflow.server.comfy_api` answers with, built from the native store's records and the
catalog's node specs; the ComfyUI prompt, client and node ids are read from a run's
``ui.comfyui``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nodeflow.errors import Issue
from nodeflow.server.comfy_ws import comfy_output
from nodeflow.server.store import FINAL_STATUSES, FINISHED, RunRecord

WIDGET_TYPES = {"integer": "INT", "number": "FLOAT", "string": "STRING", "boolean": "BOOLEAN"}


def run_meta(record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    ui = record.workflow.get("ui")
    meta = ui.get("comfyui") if isinstance(ui, dict) else None
    return meta if isinstance(meta, dict) and "prompt" in meta else None


def queue_item(record: RunRecord) -> list[Any]:
    meta = run_meta(record) or {}
    return [
        meta.get("number", 0),
        record.run_id,
        meta.get("prompt", {}),
        meta.get("extra_data", {}),
        meta.get("outputs", []),
    ]


def history_entry(record: RunRecord) -> dict[str, Any] | None:
    """A finished ComfyUI run as ComfyUI's history shows it (None: not one)."""
    meta = run_meta(record)
    if meta is None or record.status not in FINAL_STATUSES:
        return None
    node_ids = meta.get("node_ids") or {}
    outputs: dict[str, Any] = {}
    for node, report in record.outputs.items():
        if isinstance(report, dict):
            outputs.setdefault(node_ids.get(node, node), {}).update(comfy_output(report))
    started = int((record.started_at or record.submitted_at) * 1000)
    ended = int((record.finished_at or record.submitted_at) * 1000)
    messages: list[Any] = [["execution_start", {"prompt_id": record.run_id, "timestamp": started}]]
    ok = record.status == FINISHED
    if ok:
        messages.append(["execution_success", {"prompt_id": record.run_id, "timestamp": ended}])
    else:
        error = record.error or {}
        kind = "execution_error" if record.status == "failed" else "execution_interrupted"
        node = error.get("node")
        messages.append(
            [kind, {"prompt_id": record.run_id, "node_id": node_ids.get(node, node),
                    "exception_message": error.get("message", ""), "timestamp": ended}]
        )  # fmt: skip
    return {
        "prompt": queue_item(record),
        "outputs": outputs,
        "status": {"status_str": "success" if ok else "error", "completed": ok,
                   "messages": messages},
        "meta": {
            node: {"node_id": node, "display_node": node, "parent_node": None,
                   "real_node_id": node}
            for node in outputs
        },
    }  # fmt: skip


def describe_node(spec: dict[str, Any]) -> dict[str, Any]:
    """A nodeflow node in ComfyUI's schema."""
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for name, item in spec["inputs"].items():
        target = required if item.get("required") else optional
        if item["kind"] == "socket":
            target[name] = [item["type"]]
            continue
        schema = item.get("schema", {})
        if "enum" in schema:
            target[name] = [list(schema["enum"]), {"default": item.get("default")}]
            continue
        options = {"default": item.get("default")}
        for ours, theirs in (("minimum", "min"), ("maximum", "max")):
            if ours in schema:
                options[theirs] = schema[ours]
        kind = WIDGET_TYPES.get(schema.get("type", ""), "STRING")
        target[name] = [kind, options]
    outputs = spec["outputs"]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [o["type"] for o in outputs],
        "output_is_list": [False] * len(outputs),
        "output_name": [o["name"] for o in outputs],
        "name": spec["type"],
        "display_name": spec.get("display_name", spec["type"]),
        "description": spec.get("description", ""),
        "python_module": spec.get("plugin", "nodeflow"),
        "category": f"nodeflow/{spec.get('category', '')}",
        "output_node": bool(spec.get("output_node")),
        "deprecated": False,
        "experimental": False,
    }


def node_errors_response(
    issues: list[Issue], prompt: dict[str, Any], origin: dict[str, str]
) -> web.Response:
    """400 as ComfyUI answers an invalid prompt, with the structured issues alongside."""
    node_errors: dict[str, Any] = {}
    general = []
    located = []
    for issue in issues:
        node = origin.get(issue.node, issue.node) if issue.node else None
        located.append(Issue(node, issue.input, issue.code, issue.message))
        if node is None:
            general.append(issue.message)
            continue
        item = prompt.get(node)
        entry = node_errors.setdefault(
            node,
            {
                "errors": [],
                "dependent_outputs": [],
                "class_type": item.get("class_type") if isinstance(item, dict) else None,
            },
        )
        entry["errors"].append(
            {"type": issue.code, "message": issue.message, "details": issue.message,
             "extra_info": {"input_name": issue.input} if issue.input else {}}
        )  # fmt: skip
    message = "; ".join(general) or "Prompt outputs failed validation"
    kind = "prompt_outputs_failed_validation" if node_errors else "invalid_prompt"
    body = {
        "error": {"type": kind, "message": message, "details": "", "extra_info": {}},
        "node_errors": node_errors,
        "errors": [i.to_json() for i in located],
    }
    return web.json_response(body, status=400)


def refusal(status: int, kind: str, message: str) -> web.Response:
    body = {"error": {"type": kind, "message": message, "details": "", "extra_info": {}},
            "node_errors": {}}  # fmt: skip
    return web.json_response(body, status=status)
