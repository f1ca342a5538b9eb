"""Whole-graph validation: every problem at once, each located at its node and input.

Validation binds a workflow to the catalog: it resolves each node's spec, coerces widget values
through pydantic and builds the link graph. The result (a ``BoundWorkflow``) is what planning and
execution use, so nothing is looked up or coerced twice.

Given the run's folders (``env``), it also checks every file a widget picks
(``Widget(files=...)``) against the ``FileKind`` a plugin registered for that kind, so a missing
model is reported before anything runs, with the workflow's other problems. A name nobody knows
(node type, input, output, node) gets the closest known one suggested.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import ValidationError

from nodeflow.context import Environment
from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.modes import flatten, has_modes
from nodeflow.node import MISSING, InputSpec, NodeSpec
from nodeflow.plaintext import with_suggestion
from nodeflow.plugins import Catalog
from nodeflow.provenance import missing_plugin_issue, plugin_of
from nodeflow.subgraphs import expand
from nodeflow.workflow import Link, Workflow


@dataclass
class BoundNode:
    id: str
    spec: NodeSpec
    values: dict[str, Any]
    """Coerced widget values (defaults filled in) and None for absent optional sockets."""
    links: dict[str, Link]


@dataclass
class BoundWorkflow:
    workflow: Workflow
    """As given: node modes included."""
    nodes: dict[str, BoundNode]
    """The nodes that run: muted and bypassed ones resolved away (``nodeflow.modes``)."""
    graph: nx.DiGraph = field(repr=False)
    """Edges run from a link's source node to the node it feeds."""
    instances: dict[str, list[str]] = field(default_factory=dict)
    """Each expanded subgraph instance and the flat nodes that running it means."""

    def flat_targets(self, targets: Iterable[str]) -> list[str]:
        """Targets with subgraph instances replaced by the nodes they expanded to."""
        flat: list[str] = []
        for target in targets:
            for node_id in self.instances.get(target, [target]):
                if node_id not in flat:
                    flat.append(node_id)
        return flat

    @property
    def output_nodes(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.spec.output_node]


def validate(
    workflow: Workflow,
    catalog: Catalog,
    targets: Iterable[str] | None = None,
    env: Environment | None = None,
) -> tuple[BoundWorkflow | None, list[Issue]]:
    """Check the whole workflow; returns the bound workflow (None if any issue) and the issues.

    With ``env`` (the folders a run would use), the files widgets pick are checked too; without
    it there is nowhere to look, so they are not.
    """
    issues: list[Issue] = []
    nodes: dict[str, BoundNode] = {}
    given = workflow
    expanded = expand(workflow, catalog) if workflow.subgraphs else None
    if expanded is not None:
        workflow = expanded.workflow
    placeholders = expanded.placeholders if expanded else set()
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)

    for node_id, entry in workflow.nodes.items():
        if node_id in placeholders:
            continue  # a muted stand-in for a subgraph instance: it never runs
        spec = catalog.spec(entry.type)
        if spec is None:
            issues.append(
                missing_plugin_issue(node_id, entry.type, workflow, catalog)
                or _unknown_type_issue(node_id, entry.type, catalog)
            )
            for link in entry.links().values():
                if link.node in workflow.nodes:
                    graph.add_edge(link.node, node_id)
            continue
        values, links = _check_inputs(node_id, entry.inputs, spec, workflow, catalog, issues)
        if env is not None:
            issues.extend(_file_issues(node_id, spec, values, catalog, env))
        for link in links.values():
            if link.node in workflow.nodes:
                graph.add_edge(link.node, node_id)
        nodes[node_id] = BoundNode(node_id, spec, values, links)

    instances = expanded.targets if expanded else {}
    target_list = None
    if targets is not None:
        target_list = [n for t in targets for n in instances.get(t, [t])]
    cycles = _cycle_issues(graph)
    issues.extend(cycles)
    every_output = [n for n in nodes.values() if n.spec.output_node]
    if has_modes(workflow) and not cycles:
        flat = flatten(workflow, nodes, graph)
        issues = [i for i in issues if i.node not in flat.muted] + flat.issues
        nodes = {n: flat.nodes[n] for n in workflow.nodes if n in flat.nodes}  # file order
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        graph.add_edges_from((link.node, n.id) for n in nodes.values() for link in n.links.values())
        for target in target_list or ():
            if target in flat.muted or target in flat.bypassed:
                state = "muted" if target in flat.muted else "bypassed"
                message = f"node {target!r} is {state}, so it cannot be run"
                issues.append(Issue(target, None, "inactive_target", message))

    if target_list is not None:
        for target in target_list:
            if target not in workflow.nodes and target not in instances:
                message = with_suggestion(f"no node {target!r} to run", target, workflow.nodes)
                issues.append(Issue(target, None, "unknown_target", message))
        if not target_list:
            issues.append(Issue(None, None, "no_output", "no targets were given"))
    elif not any(n.spec.output_node for n in nodes.values()) and not any(
        i.code in ("unknown_node_type", "missing_plugin") for i in issues
    ):
        message = "the workflow has no output node (such as SaveImage), so nothing would run"
        if every_output:
            message = "every output node is muted or bypassed, so nothing would run"
        issues.append(Issue(None, None, "no_output", message))
    if expanded is not None:
        issues = [i for i in issues if (i.node, i.input) not in expanded.covered]
        if expanded.issues:  # an instance that could not expand mutes what it feeds: no news
            issues = [i for i in issues if i.code != "no_output"]
        issues = expanded.issues + issues
    if issues:
        return None, issues
    return BoundWorkflow(given, nodes, graph, instances), []


def bind(
    workflow: Workflow,
    catalog: Catalog,
    targets: Iterable[str] | None = None,
    env: Environment | None = None,
) -> BoundWorkflow:
    """Like ``validate`` but raises ``WorkflowInvalid`` listing every issue."""
    bound, issues = validate(workflow, catalog, targets, env)
    if bound is None:
        raise WorkflowInvalid(issues)
    return bound


def _unknown_type_issue(node_id: str, node_type: str, catalog: Catalog) -> Issue:
    message = f"unknown node type {node_type!r}"
    plugin = plugin_of(node_type)
    info = catalog.plugin(plugin) if plugin else None
    if info is not None:  # the plugin is here, the type is not: another version of it?
        message += f": plugin {plugin!r} ({info.origin}) has no such node type"
    message = with_suggestion(message, node_type, catalog.nodes)
    return Issue(node_id, None, "unknown_node_type", message)


def _file_issues(
    node_id: str,
    spec: NodeSpec,
    values: dict[str, Any],
    catalog: Catalog,
    env: Environment,
) -> list[Issue]:
    """A ``file_not_found`` issue for each file a widget value names that is not there.

    Only values are checked (written in the workflow, or defaults): a linked value is known only
    at run time, and an empty value where the default is empty means "none" (SDXL's optional
    ``path_2``). A kind no plugin registered a ``FileKind`` for is not checked.
    """
    issues = []
    for name, input_spec in spec.inputs.items():
        kind = catalog.loaders.file_kind(input_spec.files) if input_spec.files else None
        value = values.get(name)
        if kind is None or name not in values:  # linked inputs are in ``links``, not ``values``
            continue
        if not isinstance(value, str) or (not value and _empty_means_none(input_spec)):
            continue
        problem = kind.missing(value, env)
        if problem is not None:
            issues.append(Issue(node_id, name, "file_not_found", problem))
    return issues


def _empty_means_none(input_spec: InputSpec) -> bool:
    return input_spec.default in ("", None)


def _check_inputs(
    node_id: str,
    inputs: dict[str, Any],
    spec: NodeSpec,
    workflow: Workflow,
    catalog: Catalog,
    issues: list[Issue],
) -> tuple[dict[str, Any], dict[str, Link]]:
    values: dict[str, Any] = {}
    links: dict[str, Link] = {}
    for name, value in inputs.items():
        input_spec = spec.inputs.get(name)
        if input_spec is None:
            known = ", ".join(spec.inputs) or "none"
            message = f"{spec.type} has no input {name!r} (its inputs: {known})"
            issues.append(
                Issue(node_id, name, "unknown_input", with_suggestion(message, name, spec.inputs))
            )
            continue
        if isinstance(value, Link):
            issue = _check_link(node_id, name, value, input_spec.type, workflow, catalog)
            if issue is None:
                links[name] = value
            else:
                issues.append(issue)
            continue
        if input_spec.kind == "socket":
            issues.append(
                Issue(
                    node_id,
                    name,
                    "value_for_socket",
                    f"input {name!r} takes a link from a {input_spec.type} output, not a value",
                )
            )
            continue
        try:
            values[name] = input_spec.coerce(value)
        except ValidationError as exc:
            message = "; ".join(e["msg"] for e in exc.errors(include_url=False))
            issues.append(
                Issue(node_id, name, "invalid_value", f"invalid value {value!r}: {message}")
            )

    for name, input_spec in spec.inputs.items():
        if name in values or name in links or name in inputs:
            continue
        if input_spec.required:
            kind = "link" if input_spec.kind == "socket" else "value"
            issues.append(
                Issue(
                    node_id,
                    name,
                    "missing_input",
                    f"required input {name!r} ({input_spec.type}) has no {kind}",
                )
            )
        elif input_spec.default is not MISSING:
            values[name] = input_spec.default
    return values, links


def _check_link(
    node_id: str, name: str, link: Link, input_type: str, workflow: Workflow, catalog: Catalog
) -> Issue | None:
    source = workflow.nodes.get(link.node)
    if source is None:
        message = f"link from {link.source!r}: there is no node {link.node!r}"
        return Issue(
            node_id, name, "missing_node", with_suggestion(message, link.node, workflow.nodes)
        )
    source_spec = catalog.spec(source.type)
    if source_spec is None:
        return None  # already reported as an unknown node type at the source
    output = next((o for o in source_spec.outputs if o.name == link.output), None)
    if output is None:
        known = ", ".join(source_spec.output_names) or "none"
        message = (
            f"link from {link.source!r}: {source.type} has no output "
            f"{link.output!r} (its outputs: {known})"
        )
        return Issue(
            node_id,
            name,
            "missing_output",
            with_suggestion(message, link.output, source_spec.output_names),
        )
    if not catalog.types.compatible(output.type, input_type):
        return Issue(
            node_id,
            name,
            "type_mismatch",
            f"link from {link.source!r}: a {output.type} output cannot feed a {input_type} input",
        )
    return None


def _cycle_issues(graph: nx.DiGraph) -> list[Issue]:
    issues = []
    for component in nx.strongly_connected_components(graph):
        member = next(iter(component))
        if len(component) == 1 and not graph.has_edge(member, member):
            continue
        edges = nx.find_cycle(graph.subgraph(component))
        path = [u for u, _ in edges] + [edges[0][0]]
        members = ", ".join(sorted(component))
        issues.append(
            Issue(
                sorted(component)[0],
                None,
                "cycle",
                f"cycle: {' -> '.join(path)} (nodes: {members})",
            )
        )
    return issues
