"""Subgraphs, expanded at bind time into the plain nodes they hold.

A workflow's ``subgraphs`` are definitions (declared inputs and outputs, inner nodes and links)
that its nodes, and other definitions, use by name as node types. Like bypass and mute they change
what the graph is, not how it runs, so they are translated away before anything else looks: each
instance is replaced by copies of its inner nodes, with ids ``<instance>/<inner>`` (``/`` is not
allowed in a file's node ids, so no copy can collide with a real node), links into its declared
inputs re-pointed to what feeds the instance, and links from its outputs re-pointed to the inner
outputs they declare. Planning, caching and the executor then see an ordinary graph:

- the cache key of every copied node is the Merkle key of its own content and its upstream, so an
  instance's results are keyed by its definition, and two instances of one definition fed the
  same values have the same keys (node ids never enter them);
- validation reports an inner node's problems at ``<instance>/<inner>``, naming both;
- modes inside a definition travel with the copies; a muted instance becomes one muted
  placeholder node (what only it feeds does not run), and a bypassed one passes each output's
  first declared input of the same type through, as a bypassed node does (``nodeflow.modes``).

A definition that contains itself, directly or through others, is refused, and so is a workflow
that would expand to more than ``MAX_NODES`` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nodeflow.errors import Issue
from nodeflow.plaintext import with_suggestion
from nodeflow.plugins import Catalog
from nodeflow.workflow import SUBGRAPH_INPUTS, Link, NodeEntry, Subgraph, Workflow

SEPARATOR = "/"
MAX_NODES = 100_000


@dataclass(frozen=True)
class _Value:
    """A plain value bound to a declared input (given by the instance, or the default)."""

    value: Any


_NOTHING = None
"""A declared input that nothing feeds: the inner inputs it would feed are left out."""

Resolved = Link | _Value | None


@dataclass
class Expanded:
    workflow: Workflow
    """The flat workflow: no subgraph instances; built without re-validation (its copied node
    ids contain ``/``). ``subgraphs`` is kept so the file stays whole for provenance."""
    issues: list[Issue] = field(default_factory=list)
    placeholders: set[str] = field(default_factory=set)
    """Muted stand-ins for muted or bypassed instances (and ones that cannot be expanded)."""
    targets: dict[str, list[str]] = field(default_factory=dict)
    """What running an instance means: its inner output nodes and the nodes its outputs are."""
    covered: set[tuple[str, str]] = field(default_factory=set)
    """(flat node, input) pairs whose problem is already reported at the instance."""


def expand(workflow: Workflow, catalog: Catalog) -> Expanded:
    """Replace every subgraph instance in ``workflow`` by its inner nodes (recursively)."""
    expander = _Expander(workflow, catalog)
    root = _Scope(expander, workflow.nodes, prefix="", definition=None, name=None)
    root.emit()
    for message in expander.unreported_cycles():
        expander.issues.append(Issue(None, None, "subgraph_cycle", message))
    flat = Workflow.model_construct(
        version=1,
        nodes=expander.flat,
        requires=workflow.requires,
        subgraphs=workflow.subgraphs,
        ui=None,
    )
    return Expanded(
        flat, expander.issues, expander.placeholders, expander.targets, expander.covered
    )


class _Expander:
    """What one expansion shares across scopes: definitions, the flat result, issues."""

    def __init__(self, workflow: Workflow, catalog: Catalog) -> None:
        self.definitions: dict[str, Subgraph] = dict(workflow.subgraphs or {})
        self.catalog = catalog
        self.flat: dict[str, NodeEntry] = {}
        self.issues: list[Issue] = []
        self.placeholders: set[str] = set()
        self.targets: dict[str, list[str]] = {}
        self.covered: set[tuple[str, str]] = set()
        self.too_big = False
        for name in self.definitions:
            if catalog.spec(name) is not None:
                message = f"subgraph {name!r} has the name of a node type; rename the subgraph"
                self.issues.append(Issue(None, None, "subgraph_name", message))
        self.cycles = self._definition_cycles()
        self._cycles_reported: set[str] = set()

    def is_instance(self, node_type: str) -> bool:
        return node_type in self.definitions and self.catalog.spec(node_type) is None

    def _definition_cycles(self) -> dict[str, str]:
        """Each definition that contains itself, with the chain that shows it."""
        uses = nx.DiGraph()
        uses.add_nodes_from(self.definitions)
        for name, definition in self.definitions.items():
            for entry in definition.nodes.values():
                if self.is_instance(entry.type):
                    uses.add_edge(name, entry.type)
        cycles: dict[str, str] = {}
        for component in nx.strongly_connected_components(uses):
            member = min(component)
            if len(component) == 1 and not uses.has_edge(member, member):
                continue
            edges = nx.find_cycle(uses.subgraph(component), source=member)
            chain = " -> ".join([u for u, _ in edges] + [edges[0][0]])
            for name in component:
                cycles[name] = f"subgraph definitions contain themselves: {chain}"
        return cycles

    def cycle_issue(self, path: str, name: str) -> Issue:
        self._cycles_reported.add(name)
        message = f"subgraph {name!r} cannot be expanded: {self.cycles[name]}"
        return Issue(path, None, "subgraph_cycle", message)

    def unreported_cycles(self) -> list[str]:
        """Cycles among definitions no instance reached: still refused, the file is broken."""
        components: dict[str, set[str]] = {}
        for name, message in self.cycles.items():
            components.setdefault(message, set()).add(name)
        return sorted(m for m, names in components.items() if not names & self._cycles_reported)

    def add(self, node_id: str, entry: NodeEntry) -> None:
        if len(self.flat) >= MAX_NODES:
            if not self.too_big:
                self.too_big = True
                message = f"the subgraphs expand to more than {MAX_NODES} nodes"
                self.issues.append(Issue(None, None, "too_large", message))
            return
        self.flat[node_id] = entry


class _Scope:
    """The nodes of the workflow, or of one instance of a definition, being copied out flat."""

    def __init__(
        self,
        expander: _Expander,
        nodes: dict[str, NodeEntry],
        prefix: str,
        definition: Subgraph | None,
        name: str | None,
        parent: _Scope | None = None,
        instance: str | None = None,
    ) -> None:
        self.ex = expander
        self.nodes = nodes
        self.prefix = prefix
        self.definition = definition
        self.name = name
        self.parent = parent
        self.instance = instance
        """This scope's instance id in its parent's scope (None for the workflow itself)."""
        self.children: dict[str, _Scope] = {}
        self.bindings: dict[str, Resolved] = {}
        self.resolving: set[str] = set()

    @property
    def path(self) -> str:
        return self.prefix.rstrip(SEPARATOR)

    # --- what a link means here -----------------------------------------------------------

    def resolve(self, link: Link, consumer: str, port: str) -> Resolved:
        """Where ``link`` (local to this scope) really comes from, in flat ids."""
        if self.definition is not None and link.node == SUBGRAPH_INPUTS:
            if link.output not in self.definition.inputs:
                message = f"subgraph {self.name!r} declares no input {link.output!r}"
                message = with_suggestion(message, link.output, self.definition.inputs)
                self.ex.issues.append(Issue(consumer, port, "missing_input", message))
                self.ex.covered.add((consumer, port))
                return _NOTHING
            return self.binding(link.output)
        entry = self.nodes.get(link.node)
        if entry is None or not self.ex.is_instance(entry.type):
            return Link.model_construct(source=f"{self.prefix}{link.source}")
        return self.instance_output(link.node, link.output, consumer, port)

    def binding(self, port: str) -> Resolved:
        """What feeds this instance's declared input ``port``, resolved in the parent scope."""
        if port in self.bindings:
            return self.bindings[port]
        assert self.parent is not None and self.instance is not None and self.definition
        if port in self.resolving:  # instance inputs fed, through pass-throughs, by themselves
            message = f"input {port!r} of subgraph {self.name!r} is fed by its own output"
            self.ex.issues.append(Issue(self.path, port, "cycle", message))
            return _NOTHING
        self.resolving.add(port)
        given = self.parent.nodes[self.instance].inputs
        value = given.get(port)
        resolved: Resolved
        if isinstance(value, Link):
            resolved = self.parent.resolve(value, self.path, port)
        elif port in given:
            resolved = _Value(value)
        elif self.definition.inputs[port].default is not None:
            resolved = _Value(self.definition.inputs[port].default)
        else:
            resolved = _NOTHING
        self.resolving.discard(port)
        self.bindings[port] = resolved
        return resolved

    def child(self, node_id: str) -> _Scope:
        scope = self.children.get(node_id)
        if scope is None:
            name = self.nodes[node_id].type
            definition = self.ex.definitions[name]
            prefix = f"{self.prefix}{node_id}{SEPARATOR}"
            scope = _Scope(self.ex, definition.nodes, prefix, definition, name, self, node_id)
            self.children[node_id] = scope
        return scope

    def placeholder(self, node_id: str) -> None:
        """Add the muted stand-in for an instance that does not expand (once)."""
        flat_id = f"{self.prefix}{node_id}"
        if flat_id not in self.ex.flat:
            entry = NodeEntry.model_construct(type=self.nodes[node_id].type, inputs={}, mode="mute")
            self.ex.add(flat_id, entry)
            self.ex.placeholders.add(flat_id)

    def instance_output(self, node_id: str, output: str, consumer: str, port: str) -> Resolved:
        entry = self.nodes[node_id]
        definition = self.ex.definitions[entry.type]
        stand_in = Link.model_construct(source=f"{self.prefix}{node_id}.{output}")
        if output not in definition.outputs:
            message = (
                f"link from {node_id}.{output}: subgraph {entry.type!r} has no output {output!r}"
            )
            message = with_suggestion(message, output, definition.outputs)
            self.ex.issues.append(Issue(consumer, port, "missing_output", message))
            self.ex.covered.add((consumer, port))
            return _NOTHING
        if entry.mode == "mute" or entry.type in self.ex.cycles:
            self.placeholder(node_id)
            return stand_in
        if entry.mode == "bypass":
            wanted = definition.outputs[output].type
            through = next((n for n, p in definition.inputs.items() if p.type == wanted), None)
            self.placeholder(node_id)
            if through is None:
                message = (
                    f"bypassed subgraph {entry.type!r} {node_id!r} cannot pass its output "
                    f"{output!r} through: it has no {wanted} input"
                )
                issue = Issue(f"{self.prefix}{node_id}", None, "bypass_no_input", message)
                if issue not in self.ex.issues:
                    self.ex.issues.append(issue)
                return stand_in
            passed = self.child(node_id).binding(through)
            return passed if isinstance(passed, Link) else stand_in
        source = Link.model_construct(source=definition.outputs[output].source)
        return self.child(node_id).resolve(source, consumer, port)

    # --- copying out ----------------------------------------------------------------------

    def emit(self) -> None:
        """Copy this scope's nodes into the flat workflow, expanding instances in it."""
        for node_id, entry in self.nodes.items():
            if self.ex.too_big:
                return
            flat_id = f"{self.prefix}{node_id}"
            if not self.ex.is_instance(entry.type):
                self.ex.add(flat_id, self._copy(flat_id, entry))
                continue
            if entry.type in self.ex.cycles:
                self.ex.issues.append(self.ex.cycle_issue(flat_id, entry.type))
                self.placeholder(node_id)
                continue
            if entry.mode == "mute":  # like any muted node: its own problems are not reported
                self.placeholder(node_id)
                continue
            scope = self.child(node_id)
            scope.check_instance(entry)
            if entry.mode == "bypass":
                self.placeholder(node_id)
                continue
            scope.emit()
            scope.check_outputs()
            self.ex.targets[flat_id] = scope.targets()

    def _copy(self, flat_id: str, entry: NodeEntry) -> NodeEntry:
        spec = self.ex.catalog.spec(entry.type)
        inputs: dict[str, Any] = {}
        for port, value in entry.inputs.items():
            if not isinstance(value, Link):
                inputs[port] = value
                continue
            resolved = self.resolve(value, flat_id, port)
            if isinstance(resolved, _Value):
                inputs[port] = resolved.value
            elif resolved is not None:
                inputs[port] = resolved
            if self.definition is not None and value.node == SUBGRAPH_INPUTS and spec is not None:
                self._check_use(flat_id, entry, port, value.output, resolved)
        return NodeEntry.model_construct(type=entry.type, inputs=inputs, mode=entry.mode)

    def _check_use(
        self, flat_id: str, entry: NodeEntry, port: str, declared: str, resolved: Resolved
    ) -> None:
        """A declared input feeding an inner node: its type must fit, and a required inner
        input must be fed (reported at the instance, which is where the user can fix it)."""
        assert self.definition is not None
        spec = self.ex.catalog.spec(entry.type)
        inner = spec.inputs.get(port) if spec is not None else None
        declaration = self.definition.inputs.get(declared)
        if inner is None or declaration is None:
            return  # an unknown input: validation reports it at the inner node
        if not self.ex.catalog.types.compatible(declaration.type, inner.type):
            message = (
                f"subgraph {self.name!r} declares input {declared!r} as {declaration.type}, "
                f"but it feeds {entry.type} input {port!r} ({inner.type})"
            )
            self.ex.issues.append(Issue(flat_id, port, "type_mismatch", message))
            self.ex.covered.add((flat_id, port))
        elif resolved is None and inner.required and entry.mode != "mute":
            kind = "link" if inner.kind == "socket" else "link or value"
            message = f"required input {declared!r} ({declaration.type}) has no {kind}"
            issue = Issue(self.path, declared, "missing_input", message)
            if issue not in self.ex.issues:
                self.ex.issues.append(issue)
            self.ex.covered.add((flat_id, port))

    def check_instance(self, entry: NodeEntry) -> None:
        """The instance's own inputs: each must be one the definition declares."""
        assert self.definition is not None
        for port in entry.inputs:
            if port not in self.definition.inputs:
                known = ", ".join(self.definition.inputs) or "none"
                message = f"subgraph {self.name!r} has no input {port!r} (its inputs: {known})"
                message = with_suggestion(message, port, self.definition.inputs)
                self.ex.issues.append(Issue(self.path, port, "unknown_input", message))

    def check_outputs(self) -> None:
        """Each declared output names an inner node's output of a fitting type."""
        assert self.definition is not None
        for name, output in self.definition.outputs.items():
            node, _, port = output.source.partition(".")
            found = self._output_type(node, port)
            where = f"subgraph {self.name!r} output {name!r} (from {output.source!r})"
            if found is None:
                message = f"{where}: there is no such inner node or output"
                if node != SUBGRAPH_INPUTS:
                    message = with_suggestion(message, node, self.nodes)
                self.ex.issues.append(Issue(self.path, None, "subgraph_output", message))
            elif found and not self.ex.catalog.types.compatible(found, output.type):
                message = f"{where}: declared {output.type}, but that output is a {found}"
                self.ex.issues.append(Issue(self.path, None, "subgraph_output", message))

    def _output_type(self, node: str, port: str) -> str | None:
        """The type of an inner output; "" where it cannot be known (reported elsewhere)."""
        assert self.definition is not None
        if node == SUBGRAPH_INPUTS:
            declared = self.definition.inputs.get(port)
            return declared.type if declared else None
        entry = self.nodes.get(node)
        if entry is None:
            return None
        if self.ex.is_instance(entry.type):
            declared_out = self.ex.definitions[entry.type].outputs.get(port)
            return declared_out.type if declared_out else None
        spec = self.ex.catalog.spec(entry.type)
        if spec is None:
            return ""
        return next((o.type for o in spec.outputs if o.name == port), None)

    def targets(self) -> list[str]:
        """The flat nodes that running this instance means: its output nodes, and what its
        declared outputs come from."""
        found: list[str] = []
        prefix = self.prefix
        for flat_id, entry in self.ex.flat.items():
            spec = self.ex.catalog.spec(entry.type)
            if flat_id.startswith(prefix) and spec is not None and spec.output_node:
                found.append(flat_id)
        for output in (self.definition.outputs if self.definition else {}).values():
            node, _, port = output.source.partition(".")
            if not self._output_type(node, port):
                continue  # reported by check_outputs
            resolved = self.resolve(Link.model_construct(source=output.source), self.path, "")
            if isinstance(resolved, Link) and resolved.node not in found:
                found.append(resolved.node)
        return found
