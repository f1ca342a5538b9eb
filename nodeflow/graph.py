"""Planning: which nodes a run needs, and in what order.

The plan is the requested targets (by default every output node) and their ancestors, nothing
else: an unused branch is never executed. One reverse breadth-first walk finds the ancestors of
all targets together, so planning is linear in the graph size, not in depth times targets. The
order is deterministic: networkx follows the workflow's node order where the links allow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from nodeflow.validate import BoundWorkflow


@dataclass(frozen=True)
class Plan:
    order: list[str]
    """Every needed node, in a topological order."""
    targets: list[str]


def plan(bound: BoundWorkflow, targets: Iterable[str] | None = None) -> Plan:
    wanted = bound.flat_targets(targets) if targets is not None else bound.output_nodes
    needed = set(wanted)
    queue = deque(wanted)
    graph = bound.graph
    while queue:
        for parent in graph.predecessors(queue.popleft()):
            if parent not in needed:
                needed.add(parent)
                queue.append(parent)
    # Filtering a topological order of the whole graph keeps it topological, and is several
    # times cheaper than sorting a networkx subgraph view (whose lookups are all filtered).
    order = [node for node in nx.topological_sort(graph) if node in needed]
    return Plan(order=order, targets=wanted)
