"""Making workflows in code: ``b.add("TextEncode", text_encoder=model.text_encoder, text="...")``.

A node reference's attributes are links to its outputs, so a graph reads like the function calls
it stands for, and the result is an ordinary version-1 workflow document.
"""

from __future__ import annotations

import re
from typing import Any

from nodeflow.workflow import Link, Workflow


class NodeRef:
    """A node in a builder; ``ref.<output>`` is a link from that output."""

    def __init__(self, node_id: str) -> None:
        self.id = node_id

    def __getattr__(self, output: str) -> Link:
        if output.startswith("__"):
            raise AttributeError(output)
        return Link.to(self.id, output)


class WorkflowBuilder:
    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}

    def add(self, node_type: str, id: str | None = None, **inputs: Any) -> NodeRef:
        node_id = id or self._fresh_id(node_type)
        if node_id in self._nodes:
            raise ValueError(f"node id {node_id!r} is already used")
        self._nodes[node_id] = {
            "type": node_type,
            "inputs": {
                name: {"from": v.source} if isinstance(v, Link) else v for name, v in inputs.items()
            },
        }
        return NodeRef(node_id)

    def build(self) -> Workflow:
        return Workflow.from_json({"version": 1, "nodes": self._nodes})

    def _fresh_id(self, node_type: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", node_type).lower()
        number = 1
        while f"{stem}{number}" in self._nodes:
            number += 1
        return f"{stem}{number}"
