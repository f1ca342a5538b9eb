"""The state of one translation: the nodeflow nodes made so far, where each came from, problems.

A ComfyUI node becomes one or more nodeflow nodes. The main one keeps the ComfyUI id (made
safe for nodeflow's id pattern); helpers get ``<id>-<role>``. ``origin`` maps every nodeflow id
back to its ComfyUI id, so errors and progress are reported in the ids the user knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nodeflow.errors import Issue

Link = dict[str, str]
"""A nodeflow link as the workflow file writes it: ``{"from": "<node>.<output>"}``."""

MISSING = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def link(node: str, output: str) -> Link:
    return {"from": f"{node}.{output}"}


def is_comfy_link(value: Any) -> bool:
    """ComfyUI's ``["<node id>", <output index>]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and type(value[1]) is int
    )


@dataclass
class Build:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    outputs: dict[tuple[str, int], Link | None] = field(default_factory=dict)
    """(ComfyUI id, output index) -> the nodeflow output it became (None: not expressible)."""
    failed: set[str] = field(default_factory=set)
    """ComfyUI nodes already reported: links from them are not reported again."""
    companions: dict[str, Link] = field(default_factory=dict)
    """A U-Net output -> the text encoder that came with it (for model-only LoRAs)."""
    main_ids: dict[str, str] = field(default_factory=dict)
    """ComfyUI id -> the nodeflow id its main node has (or would have)."""

    def main_id(self, comfy_id: str) -> str:
        """The nodeflow id for a ComfyUI id, unique and safe, fixed at first use."""
        if comfy_id not in self.main_ids:
            self.main_ids[comfy_id] = self._fresh(_UNSAFE.sub("_", comfy_id)[:120] or "node")
        return self.main_ids[comfy_id]

    def _fresh(self, base: str) -> str:
        taken = set(self.main_ids.values()) | set(self.nodes)
        candidate, counter = base, 1
        while candidate in taken:
            counter += 1
            candidate = f"{base}_{counter}"
        return candidate


@dataclass
class ComfyNode:
    """One ComfyUI node being translated: its inputs, read with problems recorded."""

    id: str
    class_type: str
    inputs: dict[str, Any]
    build: Build

    # --- reading inputs -------------------------------------------------------------------

    def link(self, name: str, required: bool = True) -> Link | None:
        """The nodeflow output a linked input comes from; None (and an issue) if there is none."""
        value = self.inputs.get(name, MISSING)
        if value is MISSING or value is None:
            if required:
                self.issue(name, "missing_input", f"{self.class_type} needs {name!r} connected")
            return None
        if not is_comfy_link(value):
            self.issue(name, "format", f"{name!r} must be a link [node id, output index]")
            return None
        source, index = str(value[0]), value[1]
        if (source, index) in self.build.outputs:
            found = self.build.outputs[(source, index)]
            if found is None and source not in self.build.failed:
                self.issue(
                    name, "unsupported", f"output {index} of node {source!r} has no equivalent"
                )
            return found
        if source not in self.build.failed:
            self.issue(name, "missing_link", f"node {source!r} has no output {index}")
        return None

    def value(self, name: str, default: Any = MISSING) -> Any:
        """A widget value as it is (a wrong type is left for validation to report); a link where
        a value belongs is an issue (and gives the default)."""
        value = self.inputs.get(name, MISSING)
        if is_comfy_link(value):
            self.issue(name, "unsupported", f"{name!r} comes from a link; only values map here")
            return None if default is MISSING else default
        if value is MISSING:
            if default is MISSING:
                self.issue(name, "missing_input", f"{self.class_type} needs a value for {name!r}")
                return None
            return default
        return value

    # --- writing nodes --------------------------------------------------------------------

    def add(self, node_type: str, inputs: dict[str, Any], role: str | None = None) -> str:
        """Add a nodeflow node (``role`` None: the main one, with the ComfyUI id)."""
        main = self.build.main_id(self.id)
        node_id = main if role is None else self.build._fresh(f"{main}-{role}")
        self.build.nodes[node_id] = {
            "type": node_type,
            "inputs": {k: v for k, v in inputs.items() if v is not None},
        }
        self.build.origin[node_id] = self.id
        return node_id

    def issue(self, name: str | None, code: str, message: str) -> None:
        self.build.issues.append(Issue(self.id, name, code, message))
        self.build.failed.add(self.id)

    def warn(self, name: str | None, message: str) -> None:
        self.build.warnings.append(Issue(self.id, name, "approximation", message))
