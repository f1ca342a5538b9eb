"""Bypass and mute, resolved at bind time into a plain graph.

A node's optional ``mode`` changes what the graph is, not how it runs, so it is flattened away
here and planning, caching and the executor never learn about it:

- **bypass**: the node is taken out and each of its outputs is re-pointed to the node's first
  input (in declaration order) of exactly the same type, whatever feeds that input. An output
  that is linked onward but has no input of its type is an error (``bypass_no_input``), naming the
  node and the output: ComfyUI, whose behaviour this follows, also passes only matching types.
  A matching input that is itself fed by no link (an absent optional socket, a muted source, a
  widget holding a written value) passes nothing on, as a mute does.
- **mute**: the node does not run, and its consumers lose the inputs it fed. A consumer whose
  lost input is required is muted too (transitively); an optional one falls back to its
  default. A muted output node simply does not run.

Because a bypassed node's consumers are linked straight to its upstream, their cache keys are
those of the graph without it. A muted node's own problems (its inputs, its widget values, even
an unknown type) are not reported: it does not run, and muting is how a broken branch is parked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import networkx as nx

from nodeflow.errors import Issue
from nodeflow.node import MISSING
from nodeflow.workflow import Link, Workflow

if TYPE_CHECKING:
    from nodeflow.validate import BoundNode


@dataclass
class Flattened:
    nodes: dict[str, BoundNode]
    """The nodes that run, with links re-pointed past bypassed nodes and lost links dropped."""
    muted: set[str] = field(default_factory=set)
    """Nodes that do not run because they are muted, or everything feeding a required input is."""
    bypassed: set[str] = field(default_factory=set)
    issues: list[Issue] = field(default_factory=list)


def has_modes(workflow: Workflow) -> bool:
    return any(entry.mode for entry in workflow.nodes.values())


def flatten(workflow: Workflow, nodes: dict[str, BoundNode], graph: nx.DiGraph) -> Flattened:
    """Resolve every node's mode; ``graph`` (the workflow's links) must be acyclic."""
    out = Flattened(nodes={})
    passed: dict[str, dict[str, Link]] = {}  # a bypassed node's resolved input links
    reported: set[tuple[str, str]] = set()

    def resolve(link: Link) -> Link | None:
        source = link.node
        if source in out.muted:
            return None
        if source not in out.bypassed:
            return link
        spec = nodes[source].spec
        output = next(o for o in spec.outputs if o.name == link.output)
        through = next((name for name, i in spec.inputs.items() if i.type == output.type), None)
        if through is None:
            if (source, output.name) not in reported:
                reported.add((source, output.name))
                out.issues.append(
                    Issue(
                        source,
                        None,
                        "bypass_no_input",
                        f"bypassed {spec.type} {source!r} cannot pass its output "
                        f"{output.name!r} through: it has no {output.type} input",
                    )
                )
            return link  # left as it is: the issue stops the run, and mutes nothing after it
        return passed[source].get(through)

    for node_id in nx.topological_sort(graph):
        entry = workflow.nodes[node_id]
        if entry.mode == "mute":
            out.muted.add(node_id)
            continue
        bound = nodes.get(node_id)
        if bound is None:
            continue  # an unknown type: already reported
        links: dict[str, Link] = {}
        values = dict(bound.values)
        muted_by: str | None = None
        for name, link in bound.links.items():
            resolved = resolve(link)
            if resolved is not None:
                links[name] = resolved
                continue
            spec = bound.spec.inputs[name]
            if spec.required and entry.mode != "bypass":
                muted_by = name
                break
            if spec.default is not MISSING:
                values[name] = spec.default
        if muted_by is not None:
            out.muted.add(node_id)
        elif entry.mode == "bypass":
            out.bypassed.add(node_id)
            passed[node_id] = links
        else:
            out.nodes[node_id] = replace(bound, values=values, links=links)
    return out
