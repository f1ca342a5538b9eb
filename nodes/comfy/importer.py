"""A ComfyUI workflow (API or UI format, or both from a PNG) as a nodeflow ``Workflow``.

Every problem is found before anything is returned and reported at once, located by the
ComfyUI node id and input name like a validation error: a class type without a mapping, a link
to a node or output that does not exist, a cycle, a setting with no equivalent. A graph that
translates is then validated and run by the engine like any workflow.
"""

from __future__ import annotations

import json
from typing import Any

from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.imports import Imported
from nodeflow.workflow import Workflow
from nodes.comfy import ui_format
from nodes.comfy.build import Build, ComfyNode, is_comfy_link, link
from nodes.comfy.mapping import NOT_YET, TRANSLATORS

MAX_NODES = 5000
FORMAT_API, FORMAT_UI = "comfyui-api", "comfyui-ui"


def is_api_format(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and bool(document)
        and all(isinstance(v, dict) and "class_type" in v for v in document.values())
    )


def import_comfy(
    document: Any = None,
    *,
    png_text: dict[str, str] | None = None,
    source: str | None = None,
    native: dict[str, list[str]] | None = None,
) -> Imported | None:
    """The importer registered with the engine: None if the document is not ComfyUI's.

    ``native``: nodeflow node types (with their output names) a prompt may also use by name, as
    ComfyUI clients use what ``/object_info`` lists; their inputs are taken as they are.
    """
    layout = None
    if png_text is not None:
        prompt, graph = _parse(png_text.get("prompt")), _parse(png_text.get("workflow"))
        if is_api_format(prompt):
            document = prompt
            layout = ui_format.convert(graph) if ui_format.is_ui_format(graph) else None
        elif ui_format.is_ui_format(graph):
            document = graph
        else:
            return None
    if isinstance(document, dict) and is_api_format(document.get("prompt")):
        document = document["prompt"]  # a /prompt request body saved to a file
    if is_api_format(document):
        return translate(document, FORMAT_API, layout, source, native)
    if ui_format.is_ui_format(document):
        if len(document["nodes"]) > MAX_NODES:
            raise WorkflowInvalid([_too_many(len(document["nodes"]))], source)
        converted = ui_format.convert(document)
        return translate(converted.prompt, FORMAT_UI, converted, source, native)
    return None


def _parse(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _too_many(count: int) -> Issue:
    return Issue(None, None, "too_large", f"{count} nodes; at most {MAX_NODES} are imported")


def translate(
    prompt: dict[str, Any],
    kind: str = FORMAT_API,
    layout: ui_format.Converted | None = None,
    source: str | None = None,
    native: dict[str, list[str]] | None = None,
) -> Imported:
    """Translate a prompt (API format); raises ``WorkflowInvalid`` with every problem."""
    if len(prompt) > MAX_NODES:
        raise WorkflowInvalid([_too_many(len(prompt))], source)
    build = Build()
    issues = list(layout.issues) if layout is not None and kind == FORMAT_UI else []
    order, problems = _order(prompt)
    issues += problems
    build.failed.update(issue.node for issue in problems if issue.node is not None)
    for comfy_id in order:
        item = prompt[comfy_id]
        class_type = item.get("class_type")
        inputs = item.get("inputs", {})
        if not isinstance(class_type, str) or not isinstance(inputs, dict):
            build.issues.append(
                Issue(comfy_id, None, "format", "needs a class_type (text) and inputs (an object)")
            )
            build.failed.add(comfy_id)
            continue
        translator = TRANSLATORS.get(class_type)
        if translator is None and native and class_type in native:
            translator = _as_is(class_type, native[class_type])
        if translator is None:
            why = NOT_YET.get(class_type, "no nodeflow equivalent yet")
            build.issues.append(
                Issue(comfy_id, None, "unmapped_node", f"ComfyUI node {class_type}: {why}")
            )
            build.failed.add(comfy_id)
            continue
        node = ComfyNode(comfy_id, class_type, inputs, build)
        for index, output in enumerate(translator(node)):
            build.outputs[(comfy_id, index)] = output
    issues += build.issues
    if issues:
        raise WorkflowInvalid(issues, source)
    document: dict[str, Any] = {"version": 1, "nodes": build.nodes, "ui": _ui(build, layout)}
    try:
        workflow = Workflow.from_json(document)
    except WorkflowInvalid as exc:
        raise WorkflowInvalid([_in_comfy_ids(i, build) for i in exc.issues], source) from None
    return Imported(workflow, kind, list(build.warnings), dict(build.origin))


def _as_is(node_type: str, outputs: list[str]) -> Any:
    """A nodeflow node used by its own name in a prompt: links translated, values kept."""

    def translate_native(n: ComfyNode) -> list[Any]:
        inputs = {
            name: n.link(name) if is_comfy_link(value) else value
            for name, value in n.inputs.items()
        }
        main = n.add(node_type, inputs)
        return [link(main, output) for output in outputs]

    return translate_native


def _in_comfy_ids(issue: Issue, build: Build) -> Issue:
    if issue.node is None:
        return issue
    return Issue(build.origin.get(issue.node, issue.node), issue.input, issue.code, issue.message)


def _ui(build: Build, layout: ui_format.Converted | None) -> dict[str, Any]:
    ui: dict[str, Any] = {"comfyui": {"node_ids": dict(build.origin)}}
    if layout is None:
        return ui
    ui["nodes"] = {
        build.main_ids[comfy_id]: place
        for comfy_id, place in layout.positions.items()
        if comfy_id in build.main_ids and build.main_ids[comfy_id] in build.nodes
    }
    if layout.groups:
        ui["groups"] = layout.groups
    if layout.notes:
        ui["notes"] = layout.notes
    return ui


def _order(prompt: dict[str, Any]) -> tuple[list[str], list[Issue]]:
    """The node ids, sources before their consumers (Kahn); links to nowhere and cycles as
    issues (the nodes of a cycle are left out of the order)."""
    issues: list[Issue] = []
    needs: dict[str, set[str]] = {}
    for comfy_id, item in prompt.items():
        inputs = item.get("inputs") if isinstance(item, dict) else None
        needs[comfy_id] = set()
        for name, value in (inputs or {}).items() if isinstance(inputs, dict) else []:
            if not is_comfy_link(value):
                continue
            if str(value[0]) not in prompt:
                issues.append(
                    Issue(comfy_id, name, "missing_link", f"links to a missing node {value[0]!r}")
                )
            else:
                needs[comfy_id].add(str(value[0]))
    users: dict[str, list[str]] = {k: [] for k in needs}
    for comfy_id, sources in needs.items():
        for source in sources:
            users[source].append(comfy_id)
    waiting = {k: len(v) for k, v in needs.items()}
    ready = [k for k, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for user in users[current]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    stuck = sorted(k for k, count in waiting.items() if count > 0)
    if stuck:
        names = ", ".join(stuck[:20]) + (" ..." if len(stuck) > 20 else "")
        for comfy_id in stuck:
            issues.append(
                Issue(comfy_id, None, "cycle", f"part of a cycle (or after one): {names}")
            )
    return order, issues
