"""ComfyUI's editor graph (the UI format) as a prompt (the API format), and its layout.

The UI format holds ``nodes`` (each with ``inputs`` naming the link into them, ``widgets_values``
in widget order, ``pos``, ``mode``) and ``links`` (``[id, from node, from slot, to node, to slot,
type]``, or objects with those names in the newer schema), plus ``groups``. What only the editor
has is resolved here, as ComfyUI's frontend does when it queues a graph: reroutes are followed,
primitive nodes become the values they hold, muted nodes (mode 2) are left out and bypassed
ones (mode 4) pass their input of the same type through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeflow.errors import Issue
from nodes.comfy.mapping import SEED_CONTROL, WIDGETS

SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
EDITOR_ONLY = {"Note", "MarkdownNote"}
MUTED, BYPASSED = 2, 4
MAX_HOPS = 1000


@dataclass
class Converted:
    prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ComfyUI id -> {"pos": [x, y], "title"?}."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def is_ui_format(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("nodes"), list)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _point(value: Any) -> list[float] | None:
    """``[x, y]``, or litegraph's old ``{"0": x, "1": y}``."""
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if isinstance(value, list) and len(value) >= 2 and all(_number(v) for v in value[:2]):
        return [round(float(value[0])), round(float(value[1]))]
    return None


def _links(document: dict[str, Any]) -> dict[Any, tuple[str, int, str]]:
    """link id -> (origin node id, origin slot, type)."""
    found: dict[Any, tuple[str, int, str]] = {}
    raw = document.get("links")
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, list) and len(entry) >= 5:
            link_id, origin, slot = entry[0], entry[1], entry[2]
            kind = entry[5] if len(entry) > 5 else "*"
        elif isinstance(entry, dict):
            link_id, origin, slot = (
                entry.get("id"),
                entry.get("origin_id"),
                entry.get("origin_slot"),
            )
            kind = entry.get("type", "*")
        else:
            continue
        if isinstance(link_id, int | str) and isinstance(origin, int | str) and type(slot) is int:
            found[link_id] = (str(origin), slot, str(kind))
    return found


def convert(document: dict[str, Any]) -> Converted:
    """The prompt the graph queues, with layout; problems (a broken link) as issues."""
    out = Converted()
    nodes: dict[str, dict[str, Any]] = {}
    for raw in document["nodes"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), int | str):
            out.issues.append(Issue(None, None, "format", "a node without a usable id"))
            continue
        if isinstance(raw.get("id"), bool) or not isinstance(raw.get("type"), str):
            out.issues.append(Issue(str(raw.get("id")), None, "format", "a node without a type"))
            continue
        if str(raw["id"]) in nodes:
            out.issues.append(Issue(str(raw["id"]), None, "duplicate_node", "a repeated node id"))
            continue
        nodes[str(raw["id"])] = raw
    links = _links(document)
    resolver = _Resolver(nodes, links)
    for node_id, raw in nodes.items():
        kind = raw["type"]
        pos = _point(raw.get("pos"))
        if kind in EDITOR_ONLY:
            values = raw.get("widgets_values")
            text = values[0] if isinstance(values, list) and values else ""
            size = _point(raw.get("size")) or [240, 120]
            note = {"id": f"note_{node_id}", "pos": pos or [0, 0], "size": size}
            out.notes.append({**note, "text": text if isinstance(text, str) else ""})
            continue
        if kind in ("Reroute", "PrimitiveNode") or raw.get("mode") in (MUTED, BYPASSED):
            continue
        inputs = _widget_values(kind, raw.get("widgets_values"))
        for entry in raw.get("inputs") if isinstance(raw.get("inputs"), list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            link_id = entry.get("link")
            if link_id is None or isinstance(link_id, bool):
                continue
            if not isinstance(link_id, int | str) or link_id not in links:
                out.issues.append(
                    Issue(
                        node_id, entry["name"], "missing_link", f"link {link_id!r} does not exist"
                    )
                )
                continue
            value = resolver.resolve(link_id)
            if value is _Resolver.DROPPED:
                inputs.pop(entry["name"], None)
            elif value is _Resolver.BROKEN:
                out.issues.append(
                    Issue(node_id, entry["name"], "missing_link", "its link leads nowhere")
                )
            else:
                inputs[entry["name"]] = value
        item: dict[str, Any] = {"class_type": kind, "inputs": inputs}
        if isinstance(raw.get("title"), str):
            item["_meta"] = {"title": raw["title"]}
        out.prompt[node_id] = item
        place: dict[str, Any] = {"pos": pos} if pos else {}
        if isinstance(raw.get("title"), str):
            place["title"] = raw["title"]
        if place:
            out.positions[node_id] = place
    groups = document.get("groups")
    for index, group in enumerate(groups if isinstance(groups, list) else []):
        if isinstance(group, dict) and isinstance(group.get("bounding"), list):
            box = group["bounding"]
            if len(box) == 4 and all(_number(v) for v in box):
                entry = {"id": f"group_{index + 1}", "pos": [round(box[0]), round(box[1])]}
                entry["size"] = [round(box[2]), round(box[3])]
                entry["title"] = group["title"] if isinstance(group.get("title"), str) else "Group"
                if isinstance(group.get("color"), str):
                    entry["color"] = group["color"]
                out.groups.append(entry)
    return out


def _widget_values(kind: str, values: Any) -> dict[str, Any]:
    """``widgets_values`` by widget name (a list in widget order, or a dict by name)."""
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if isinstance(k, str)}
    if not isinstance(values, list):
        return {}
    names = WIDGETS.get(kind)
    if names is None:  # an unknown node: its values keep their positions, for the report
        return {}
    found: dict[str, Any] = {}
    position = 0
    for name in names:
        if position >= len(values):
            break
        if name == SEED_CONTROL:
            if isinstance(values[position], str) and values[position] in SEED_CONTROLS:
                position += 1
            continue
        found[name] = values[position]
        position += 1
    return found


class _Resolver:
    """Follows a link back through reroutes, bypassed nodes and primitives to its real source."""

    DROPPED = object()  # from a muted node: the input is left out, as ComfyUI does
    BROKEN = object()

    def __init__(self, nodes: dict[str, dict[str, Any]], links: dict[Any, tuple[str, int, str]]):
        self.nodes = nodes
        self.links = links

    def resolve(self, link_id: Any) -> Any:
        for _ in range(MAX_HOPS):
            found = self.links.get(link_id)
            if found is None:
                return self.BROKEN
            origin, slot, kind = found
            node = self.nodes.get(origin)
            if node is None:
                return self.BROKEN
            if node["type"] == "PrimitiveNode":
                values = node.get("widgets_values")
                return values[0] if isinstance(values, list) and values else self.BROKEN
            if node["type"] == "Reroute" or node.get("mode") == BYPASSED:
                link_id = self._passed_through(node, kind)
                if link_id is None:
                    return self.BROKEN
                continue
            if node.get("mode") == MUTED:
                return self.DROPPED
            return [origin, slot]
        return self.BROKEN  # a loop of reroutes

    @staticmethod
    def _passed_through(node: dict[str, Any], kind: str) -> Any:
        """The link into a reroute, or a bypassed node's first input of the output's type."""
        inputs = [i for i in node.get("inputs") or [] if isinstance(i, dict)]
        if node["type"] != "Reroute":
            inputs = [i for i in inputs if i.get("type") == kind]
        for entry in inputs:
            if entry.get("link") is not None and not isinstance(entry.get("link"), bool):
                return entry["link"] if isinstance(entry["link"], int | str) else None
        return None
