"""Fuzzing the loader and the validator with random and mutated workflow documents.

Whatever a document holds, ``Workflow.from_json`` / ``Workflow.loads`` and ``validate`` either
accept it or answer with structured, located issues (``WorkflowInvalid.issues`` or the list that
``validate`` returns): no other exception escapes. Three sources of documents:

* arbitrary JSON values, and arbitrary values in the shape of a workflow;
* raw text and bytes, including corrupted serializations of valid workflows;
* valid workflows built from the test node catalog, then mutated: cycles, dangling links, wrong
  output names, widget values of the wrong type, unknown inputs and keys at every level, deleted
  fields, odd node ids, replaced containers.

Every workflow that loads is also dumped and reloaded (it must come back equal), and every one that
validates is planned (the plan must be a topological order covering the targets' ancestors).
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from typing import Any

import testnodes
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.graph import plan
from nodeflow.node import InputSpec
from nodeflow.plugins import load_catalog
from nodeflow.validate import BoundWorkflow, validate
from nodeflow.workflow import Workflow

# The ``catalog`` fixture is function-scoped, which @given tests must not use: build one here.
CATALOG = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
assert not CATALOG.failures, CATALOG.failures
NODE_TYPES = sorted(CATALOG.nodes)
OUTPUT_NAMES = sorted({o.name for spec in CATALOG.nodes.values() for o in spec.outputs})
INPUT_NAMES = sorted({name for spec in CATALOG.nodes.values() for name in spec.inputs})

# --- checking the outcome ----------------------------------------------------------------------


def check_issues(issues: Any, document: Any) -> None:
    """Issues from the loader: a non-empty list of well-formed Issues, located in ``document``."""
    assert isinstance(issues, list)
    assert issues
    node_ids = document.get("nodes") if isinstance(document, dict) else None
    for issue in issues:
        assert type(issue) is Issue
        assert isinstance(issue.code, str)
        assert issue.code
        assert isinstance(issue.message, str)
        assert issue.message
        assert issue.input is None or isinstance(issue.input, str)
        if isinstance(node_ids, dict):
            assert issue.node is None or issue.node in node_ids, (issue, list(node_ids))
        else:
            assert issue.node is None, issue
        if issue.input is not None:
            assert issue.node is not None, issue
        str(issue)
        json.dumps(issue.to_json())


def load_or_issues(load: Callable[[], Workflow], document: Any) -> Workflow | None:
    """Run ``load``: a Workflow (checked to round-trip) or WorkflowInvalid; nothing else."""
    try:
        workflow = load()
    except WorkflowInvalid as exc:
        check_issues(exc.issues, document)
        return None
    assert isinstance(workflow, Workflow)
    check_round_trip(workflow)
    return workflow


def _outcome(load: Callable[[], Workflow]) -> Workflow | list[Issue]:
    try:
        return load()
    except WorkflowInvalid as exc:
        return exc.issues


def _non_finite(value: Any) -> bool:
    """Whether a JSON-like value holds NaN or an infinity (which workflows refuse)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def check_round_trip(workflow: Workflow) -> None:
    text = workflow.dumps()
    again = Workflow.loads(text)
    assert again.dumps() == text
    assert again == workflow


def check_validation(
    workflow: Workflow, targets: list[str] | None = None
) -> tuple[BoundWorkflow | None, list[Issue]]:
    """``validate`` returns a bound workflow and no issues, or None and located issues."""
    bound, issues = validate(workflow, CATALOG, targets)
    assert isinstance(issues, list)
    if bound is None:
        assert issues
        for issue in issues:
            assert type(issue) is Issue
            assert isinstance(issue.code, str)
            assert issue.code
            assert isinstance(issue.message, str)
            assert issue.message
            assert issue.input is None or isinstance(issue.input, str)
            if issue.code == "unknown_target":
                # The one issue located at a node the workflow lacks: the target asked for.
                assert targets is not None
                assert issue.node in targets
            else:
                assert issue.node is None or issue.node in workflow.nodes, issue
            str(issue)
        return None, issues
    assert isinstance(bound, BoundWorkflow)
    assert issues == []
    assert set(bound.nodes) == set(workflow.nodes)
    check_plan(bound, targets)
    return bound, issues


def check_plan(bound: BoundWorkflow, targets: list[str] | None) -> None:
    result = plan(bound, targets)
    wanted = bound.output_nodes if targets is None else targets
    position = {node_id: i for i, node_id in enumerate(result.order)}
    assert len(position) == len(result.order)
    assert set(wanted) <= set(position)
    for node_id in result.order:
        for link in bound.nodes[node_id].links.values():
            assert position[link.node] < position[node_id]
    # Exactly the targets and their ancestors, nothing else.
    needed, stack = set(wanted), list(wanted)
    while stack:
        for link in bound.nodes[stack.pop()].links.values():
            if link.node not in needed:
                needed.add(link.node)
                stack.append(link.node)
    assert set(position) == needed


# --- strategies: arbitrary JSON ------------------------------------------------------------------

KEYS = st.sampled_from(["version", "nodes", "ui", "type", "inputs", "from", "x", "value"])
KEYS |= st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([1, "c.integer", "Constant", "Show", "a.b", ""])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=10,
)

ID_CHARS = string.ascii_letters + string.digits + "_-"
NODE_IDS = st.text(alphabet=ID_CHARS, min_size=1, max_size=10)
ODD_IDS = st.sampled_from(
    ["", " ", "a b", "a.b", "ü", "x" * 201, "-", "_", "0", "a\n", "null", "nodes", ".", "a/b"]
) | st.text(max_size=12)
ANY_IDS = NODE_IDS | ODD_IDS
LINK_TEXT = (
    st.builds(lambda n, o: f"{n}.{o}", ANY_IDS, st.sampled_from(OUTPUT_NAMES) | st.text(max_size=6))
    | st.sampled_from(["", "a", "a.", ".b", "a.b.c", "a.1b", "a..b", "a b.c"])
    | st.text(max_size=12)
)
INPUT_VALUES = JSON_VALUES | st.fixed_dictionaries(
    {"from": LINK_TEXT | JSON_VALUES}, optional={"extra": JSON_VALUES}
)
NODE_ENTRIES = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(NODE_TYPES) | JSON_VALUES,
            "inputs": st.dictionaries(
                st.sampled_from(INPUT_NAMES) | st.text(max_size=6), INPUT_VALUES, max_size=4
            )
            | JSON_VALUES,
            "extra": JSON_VALUES,
        },
    )
    | JSON_VALUES
)
SHAPED_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2, 0, "1", 1.0, True, None]) | SCALARS,
        "nodes": st.dictionaries(ANY_IDS, NODE_ENTRIES, max_size=5) | JSON_VALUES,
        "ui": st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


# --- strategies: valid workflows from the catalog, and their mutations ---------------------------


def pick(draw: st.DrawFn, items: list[Any] | tuple[Any, ...]) -> Any:
    """One of ``items``. (Cheaper than a fresh ``st.sampled_from`` per draw, which Hypothesis
    validates anew each time; ``st.integers`` strategies are cached.)"""
    return items[draw(st.integers(0, len(items) - 1))]


def widget_values(spec: InputSpec) -> st.SearchStrategy[Any] | None:
    """Values the widget accepts, read off its JSON Schema; None where the schema is unfamiliar."""
    schema = spec.schema or {}
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    low, high = schema.get("minimum"), schema.get("maximum")
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(-(10**6) if low is None else low, 10**6 if high is None else high)
    if kind == "number":
        step = schema.get("multipleOf", 0.25)
        low = -100 if low is None else low
        high = 100 if high is None else high
        return st.integers(math.ceil(low / step), math.floor(high / step)).map(lambda k: k * step)
    if kind == "string":
        return st.text(max_size=12)
    if kind == "boolean":
        return st.booleans()
    return None


WIDGET_VALUES = {
    (type_name, name): widget_values(input_spec)
    for type_name, spec in CATALOG.nodes.items()
    for name, input_spec in spec.inputs.items()
    if input_spec.kind == "widget"
}
ID_PREFIXES = st.text(alphabet=ID_CHARS, max_size=4)
FINITE_JSON_VALUES = JSON_VALUES.filter(lambda value: not _non_finite(value))
UI_BLOCKS = st.dictionaries(st.text(max_size=6), FINITE_JSON_VALUES, max_size=3)


@st.composite
def valid_documents(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A workflow built from the catalog: a Constant first, a Show last, random nodes between,
    each input linked to an earlier compatible output or given a valid value (or left out where
    optional). Returns the document and whether it is valid by construction."""
    middle = draw(st.lists(st.sampled_from(NODE_TYPES), max_size=7))
    types = ["Constant", *middle, "Show"]
    prefix = draw(ID_PREFIXES)  # unique ids without Hypothesis retrying duplicate draws
    ids = [f"{prefix}{i}" for i in range(len(types))]
    valid = True
    nodes: dict[str, Any] = {}
    outputs: list[tuple[str, str, str]] = []  # (node id, output name, socket type), so far
    for node_id, type_name in zip(ids, types, strict=True):
        spec = CATALOG.nodes[type_name]
        inputs: dict[str, Any] = {}
        for name, input_spec in spec.inputs.items():
            sources = [o for o in outputs if CATALOG.types.compatible(o[2], input_spec.type)]
            values = WIDGET_VALUES.get((type_name, name))
            choices = ["omit"] if not input_spec.required else []
            choices += ["link"] if sources else []
            choices += ["value"] if values is not None else []
            if not choices:
                valid = False
                continue
            choice = pick(draw, choices)
            if choice == "link":
                source = pick(draw, sources)
                inputs[name] = {"from": f"{source[0]}.{source[1]}"}
            elif choice == "value":
                inputs[name] = draw(values)
        entry: dict[str, Any] = {"type": type_name}
        if inputs or draw(st.booleans()):
            entry["inputs"] = inputs
        nodes[node_id] = entry
        outputs.extend((node_id, o.name, o.type) for o in spec.outputs)
    if draw(st.booleans()):  # the order of the nodes in the file must not matter
        nodes = dict(reversed(nodes.items()))
    document: dict[str, Any] = {"nodes": nodes}
    if draw(st.booleans()):
        document["version"] = 1
    if draw(st.integers(0, 3)) == 0:
        document["ui"] = draw(UI_BLOCKS)
    return document, valid


def _node_dicts(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = document.get("nodes")
    if not isinstance(nodes, dict):
        return {}
    return {k: v for k, v in nodes.items() if isinstance(v, dict)}


def _pick_node(draw: st.DrawFn, document: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    nodes = _node_dicts(document)
    if not nodes:
        return None
    node_id = pick(draw, sorted(nodes))
    return node_id, nodes[node_id]


def _inputs_of(entry: dict[str, Any]) -> dict[str, Any]:
    inputs = entry.get("inputs")
    if not isinstance(inputs, dict):
        inputs = entry["inputs"] = {}
    return inputs


def _spec_of(entry: dict[str, Any]):
    return CATALOG.spec(entry["type"]) if isinstance(entry.get("type"), str) else None


def _input_name(draw: st.DrawFn, entry: dict[str, Any], kind: str | None = None) -> str:
    spec = _spec_of(entry)
    names = [n for n, i in spec.inputs.items() if kind is None or i.kind == kind] if spec else []
    return pick(draw, names or INPUT_NAMES)


def _real_output(draw: st.DrawFn, entry: dict[str, Any]) -> str:
    spec = _spec_of(entry)
    return pick(draw, spec.output_names if spec and spec.outputs else OUTPUT_NAMES)


WRONG_OUTPUTS = st.sampled_from([*OUTPUT_NAMES, "nope", "out_1", "Integer"]) | st.text(max_size=6)
BAD_VALUES = (
    st.sampled_from([1001, -1001, 0.3, 10.5, "pow", "", True, None, 1e308, [], {}, "1"])
    | JSON_VALUES
)
UNKNOWN_INPUTS = st.sampled_from(["xx", "X", "ctx", "value ", "", "from"]) | st.text(max_size=8)
UNKNOWN_KEYS = st.sampled_from(["extra", "Nodes", "id", "to", "output", "links"]) | st.text()
ODD_TYPES = (
    st.sampled_from(NODE_TYPES)
    | st.sampled_from(["", "constant", "Nope", "nodes.Constant", 1, None])
    | JSON_VALUES
)
ODD_VERSIONS = st.sampled_from([2, 0, "1", 1.5, None, [1], True]) | SCALARS
ODD_CONTAINERS = st.sampled_from([[], "x", None, 1, [{"type": "Show"}]]) | JSON_VALUES
NEW_NODE_INPUTS = st.dictionaries(st.sampled_from(INPUT_NAMES), INPUT_VALUES, max_size=3)


def m_wrong_output(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    target, source = _pick_node(draw, doc), _pick_node(draw, doc)
    if target and source:
        output = draw(WRONG_OUTPUTS)
        name = _input_name(draw, target[1])
        _inputs_of(target[1])[name] = {"from": f"{source[0]}.{output}"}


def m_dangling_link(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    picked = _pick_node(draw, doc)
    if picked:
        missing = draw(NODE_IDS)
        if missing not in _node_dicts(doc):
            output = pick(draw, OUTPUT_NAMES)
            _inputs_of(picked[1])[_input_name(draw, picked[1])] = {"from": f"{missing}.{output}"}


def _sources(entry: dict[str, Any]) -> list[str]:
    inputs = entry.get("inputs")
    links = (
        [v.get("from") for v in inputs.values() if isinstance(v, dict)]
        if isinstance(inputs, dict)
        else []
    )
    return [link.split(".", 1)[0] for link in links if isinstance(link, str)]


def m_cycle(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    """Feed an ancestor of a node (or the node itself) from that node's output: a cycle."""
    nodes = _node_dicts(doc)
    if not nodes:
        return
    with_outputs = [n for n, entry in nodes.items() if (spec := _spec_of(entry)) and spec.outputs]
    last = pick(draw, sorted(with_outputs or nodes))
    ancestors, stack = [last], [last]
    while stack:
        for parent in _sources(nodes[stack.pop()]):
            if parent in nodes and parent not in ancestors:
                ancestors.append(parent)
                stack.append(parent)
    with_sockets = [
        a
        for a in ancestors
        if (spec := _spec_of(nodes[a])) and any(i.kind == "socket" for i in spec.inputs.values())
    ]
    first = pick(draw, with_sockets or ancestors)
    name = _input_name(draw, nodes[first], kind="socket")
    _inputs_of(nodes[first])[name] = {"from": f"{last}.{_real_output(draw, nodes[last])}"}


def m_link_anywhere(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    """A real output into any input, widgets included: type mismatches, widget links."""
    target, source = _pick_node(draw, doc), _pick_node(draw, doc)
    if target and source:
        name = _input_name(draw, target[1])
        _inputs_of(target[1])[name] = {"from": f"{source[0]}.{_real_output(draw, source[1])}"}


def m_bad_value(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    picked = _pick_node(draw, doc)
    if picked:
        _inputs_of(picked[1])[_input_name(draw, picked[1])] = draw(BAD_VALUES)


def m_unknown_input(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    picked = _pick_node(draw, doc)
    if picked:
        _inputs_of(picked[1])[draw(UNKNOWN_INPUTS)] = draw(INPUT_VALUES)


def m_unknown_key(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    key = draw(UNKNOWN_KEYS)
    value = draw(JSON_VALUES)
    level = pick(draw, ["document", "node", "link"])
    picked = _pick_node(draw, doc)
    if level == "document" or picked is None:
        if key not in ("version", "nodes", "ui"):
            doc[key] = value
    elif level == "node":
        if key not in ("type", "inputs"):
            picked[1][key] = value
    else:
        links = [v for v in _inputs_of(picked[1]).values() if isinstance(v, dict) and "from" in v]
        if links and key != "from":
            pick(draw, links)[key] = value


def m_delete(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    what = pick(draw, ["type", "inputs", "input", "from", "version", "nodes", "ui"])
    picked = _pick_node(draw, doc)
    if what in ("version", "nodes", "ui") or picked is None:
        doc.pop(what, None)
    elif what in ("type", "inputs"):
        picked[1].pop(what, None)
    else:
        inputs = _inputs_of(picked[1])
        if inputs:
            name = pick(draw, sorted(inputs))
            if what == "from" and isinstance(inputs[name], dict):
                inputs[name].pop("from", None)
            else:
                del inputs[name]


def m_odd_id(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        return
    old = pick(draw, sorted(nodes))
    new = draw(ANY_IDS)
    doc["nodes"] = {(new if k == old else k): v for k, v in nodes.items()}
    if draw(st.booleans()):  # also rewrite the links to it
        for entry in _node_dicts(doc).values():
            inputs = entry.get("inputs")
            for value in inputs.values() if isinstance(inputs, dict) else ():
                source = value.get("from") if isinstance(value, dict) else None
                if isinstance(source, str) and source.startswith(f"{old}."):
                    value["from"] = new + source[len(old) :]


def m_retype(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    picked = _pick_node(draw, doc)
    if picked:
        picked[1]["type"] = draw(ODD_TYPES)


def m_version(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    doc["version"] = draw(ODD_VERSIONS)


def m_container(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    """Replace a container (nodes, a node entry, its inputs, a link, ui) with another value."""
    value = draw(ODD_CONTAINERS)
    where = pick(draw, ["nodes", "entry", "inputs", "link", "ui"])
    picked = _pick_node(draw, doc)
    if where in ("nodes", "ui") or picked is None:
        doc["nodes" if where == "entry" else where] = value
    elif where == "entry":
        doc["nodes"][picked[0]] = value
    elif where == "inputs":
        picked[1]["inputs"] = value
    else:
        links = [k for k, v in _inputs_of(picked[1]).items() if isinstance(v, dict)]
        if links:
            picked[1]["inputs"][pick(draw, links)] = {"from": value}


def m_malformed_link(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    picked = _pick_node(draw, doc)
    if picked:
        source = draw(LINK_TEXT | JSON_VALUES)
        _inputs_of(picked[1])[_input_name(draw, picked[1])] = {"from": source}


def m_drop_outputs(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    nodes = doc.get("nodes")
    if isinstance(nodes, dict):
        for node_id, entry in _node_dicts(doc).items():
            spec = _spec_of(entry)
            if spec and spec.output_node:
                del nodes[node_id]


def m_add_node(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    nodes = doc.get("nodes")
    if isinstance(nodes, dict):
        node_type = pick(draw, NODE_TYPES)
        nodes[draw(ANY_IDS)] = {"type": node_type, "inputs": draw(NEW_NODE_INPUTS)}


MUTATIONS: dict[str, Callable[[st.DrawFn, dict[str, Any]], None]] = {
    f.__name__[2:]: f
    for f in [
        m_wrong_output,
        m_dangling_link,
        m_cycle,
        m_link_anywhere,
        m_bad_value,
        m_unknown_input,
        m_unknown_key,
        m_delete,
        m_odd_id,
        m_retype,
        m_version,
        m_container,
        m_malformed_link,
        m_drop_outputs,
        m_add_node,
    ]
}

MUTATION_NAMES = ["cycle", *sorted(MUTATIONS), "link_anywhere"]  # cycles twice as often


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], bool]:
    document, valid = draw(valid_documents())
    count = pick(draw, [1, 2, 0, 1, 3, 1, 2])  # most documents get at least one mutation
    mutations = [pick(draw, MUTATION_NAMES) for _ in range(count)]
    for name in mutations:
        MUTATIONS[name](draw, document)
    return document, mutations, valid


PIECES = st.sampled_from([*'{}[]",:.\\0 -e', "null", "NaN", "\x00", "\ud800"]) | st.text(max_size=3)


@st.composite
def corrupted_texts(draw: st.DrawFn) -> str | bytes:
    """A valid workflow's JSON text with a few characters deleted, inserted or replaced."""
    document, _ = draw(valid_documents())
    text = json.dumps(document, indent=pick(draw, [None, 2]), ensure_ascii=False)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = pick(draw, ["delete", "insert", "replace", "truncate"])
        piece = draw(PIECES)
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "replace":
            text = text[:i] + piece + text[i + len(piece) :]
        else:
            text = text[:i]
    encoding = pick(draw, [None, "utf-8", "utf-16", "utf-32", "latin-1"])
    if encoding is None:
        return text
    return text.encode(encoding, errors="replace")


JSONISH_TEXT = st.text(alphabet='{}[]":,.0123456789-+eE \n\\truefalsnNIy/u', max_size=60)
RAW_DOCUMENTS = st.text() | st.binary() | JSONISH_TEXT | corrupted_texts()


# --- the properties ---------------------------------------------------------------------------


@settings(max_examples=700, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_json_values_load_or_raise_structured_issues(value):
    workflow = load_or_issues(lambda: Workflow.from_json(value), value)
    text = json.dumps(value)
    again = load_or_issues(lambda: Workflow.loads(text), value)
    assert (workflow is None) == (again is None)
    if workflow is not None:
        check_validation(workflow)


@settings(max_examples=600, deadline=None)
@given(SHAPED_DOCUMENTS, st.data())
def test_workflow_shaped_values_load_and_validate_or_raise_structured_issues(document, data):
    workflow = load_or_issues(lambda: Workflow.from_json(document), document)
    if workflow is None:
        return
    check_validation(workflow)
    targets = data.draw(st.lists(st.sampled_from([*workflow.nodes, "no-such-node"]), max_size=3))
    check_validation(workflow, targets)


@settings(max_examples=1000, deadline=None)
@given(RAW_DOCUMENTS)
@example("")
@example(b"\xff\xfe\x00")
@example("\ufeff{}")
@example(b"\xef\xbb\xbf{}")
@example('{"ui": {"x": "\\ud800"}}')
@example('{"nodes": {"a": {"type": "Show", "inputs": {"x": NaN}}}}')
@example("1" * 5000)  # past Python's 4300-digit limit on int(): a ValueError inside json.loads
@example('{"ui": {"n": ' + "9" * 5000 + "}}")
@example("[" * 5000 + "]" * 5000)  # nesting past the recursion limit: a RecursionError
@example('{"nodes": ' + "[" * 100_000)
def test_raw_text_and_bytes_load_or_raise_structured_issues(raw):
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    workflow = load_or_issues(lambda: Workflow.loads(raw), document)
    if workflow is not None:
        check_validation(workflow)


@settings(max_examples=1200, deadline=None)
@given(mutated_documents(), st.data())
def test_mutated_workflows_validate_or_raise_structured_issues(case, data):
    document, mutations, valid = case
    workflow = load_or_issues(lambda: Workflow.from_json(document), document)
    # The same document as text loads the same way, with the same issues; NaN and infinities
    # are refused either way (as a number the JSON parser rejects, or one the model rejects).
    as_text = _outcome(lambda: Workflow.loads(json.dumps(document)))
    as_data = _outcome(lambda: Workflow.from_json(document))
    if _non_finite(document):
        assert isinstance(as_text, list) and isinstance(as_data, list)
    else:
        assert as_text == as_data
    if workflow is None:
        assert mutations, "an unmutated workflow built from the catalog failed to load"
        return

    bound, issues = check_validation(workflow)
    if not mutations and valid:
        assert bound is not None, issues

    targets = data.draw(st.lists(st.sampled_from([*workflow.nodes, "no-such-node"]), max_size=3))
    bound, issues = check_validation(workflow, targets)
    if "no-such-node" in targets:
        assert any(i.code == "unknown_target" and i.node == "no-such-node" for i in issues)
    if not targets:
        assert any(i.code == "no_output" for i in issues)


@settings(max_examples=200, deadline=None)
@given(valid_documents())
def test_valid_workflows_from_the_catalog_validate(case):
    document, valid = case
    workflow = Workflow.from_json(document)
    check_round_trip(workflow)
    bound, issues = check_validation(workflow)
    if valid:
        assert bound is not None, issues
