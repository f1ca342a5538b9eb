"""Fuzzing the ComfyUI importer: whatever a file holds, it imports or gives located issues.

Arbitrary JSON, documents in the shape of either ComfyUI format with random contents, the
template fixtures mutated (links to missing nodes and outputs, cycles, wrong types, deleted and
replaced fields), PNGs with damaged chunks, and huge or deeply nested files: the engine's
loader (``nodeflow.imports``) either returns a workflow that saves, reloads and validates
without raising, or raises ``WorkflowInvalid`` with well-formed issues. Nothing else escapes.
"""

from __future__ import annotations

import copy
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.context import Environment
from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.imports import PNG_SIGNATURE, Imported, load_bytes, load_document
from nodeflow.plugins import load_catalog
from nodeflow.validate import validate
from nodeflow.workflow import Workflow
from nodes.comfy.mapping import TRANSLATORS, WIDGETS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"
CATALOG = load_catalog()
LOADERS = CATALOG.loaders
ENV = Environment.from_dirs("/nonexistent/models", "/nonexistent/out", "/nonexistent/in")
TEMPLATES = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
CLASS_TYPES = [*sorted(TRANSLATORS), "UpscaleModelLoader", "Reroute", "PrimitiveNode", "Note", "X"]
SOCKETS = ["model", "clip", "vae", "samples", "images", "pixels", "positive", "negative"]
SOCKETS += ["latent_image", "image", "conditioning", "clip_vision", "clip_vision_output"]
INPUT_NAMES = sorted({n for names in WIDGETS.values() for n in names} | set(SOCKETS))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["euler", "karras", "enable", "disable", "fixed", "nearest-exact", ""])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
node_ids = st.sampled_from([str(i) for i in range(12)]) | st.text(max_size=4)
links = st.tuples(node_ids, st.integers(min_value=-1, max_value=4)).map(list)
api_prompts = st.dictionaries(
    node_ids,
    st.fixed_dictionaries(
        {
            "class_type": st.sampled_from(CLASS_TYPES) | json_values,
            "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), links | json_values, max_size=8)
            | json_values,
        }
    ),
    min_size=1,
    max_size=10,
)
ui_nodes = st.fixed_dictionaries(
    {
        "id": st.integers(min_value=0, max_value=12) | json_values,
        "type": st.sampled_from(CLASS_TYPES) | json_values,
        "mode": st.sampled_from([0, 2, 4]) | json_values,
        "pos": st.lists(st.integers(-5000, 5000), max_size=3) | json_values,
        "inputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(INPUT_NAMES), "type": st.sampled_from(["MODEL", "*"]),
                 "link": st.integers(0, 20) | json_values}
            ),
            max_size=5,
        ) | json_values,
        "widgets_values": st.lists(json_values, max_size=8) | json_values,
    }
)  # fmt: skip
ui_links = st.lists(
    st.tuples(
        st.integers(0, 20), st.integers(0, 12), st.integers(-1, 3), st.integers(0, 12),
        st.integers(0, 5), st.sampled_from(["MODEL", "CLIP", "*"]),
    ).map(list)
    | json_values,
    max_size=20,
)  # fmt: skip
ui_documents = st.fixed_dictionaries(
    {"nodes": st.lists(ui_nodes, max_size=10), "links": ui_links | json_values},
    optional={"groups": st.lists(json_values, max_size=3)},
)


def check(outcome: Imported | list[Issue]) -> None:
    if isinstance(outcome, list):
        assert outcome
        for issue in outcome:
            assert type(issue) is Issue and issue.code and issue.message
            assert issue.node is None or isinstance(issue.node, str)
            assert issue.input is None or isinstance(issue.input, str)
            json.dumps(issue.to_json())
        return
    assert isinstance(outcome.workflow, Workflow)
    again = Workflow.loads(outcome.workflow.dumps())
    assert again == outcome.workflow
    _, issues = validate(outcome.workflow, CATALOG, env=ENV)
    assert all(type(i) is Issue for i in issues)


def outcome_of(load: Any) -> Imported | list[Issue]:
    try:
        return load()
    except WorkflowInvalid as exc:
        return exc.issues


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_imports_or_gives_issues(document):
    check(outcome_of(lambda: load_document(document, LOADERS)))


@settings(max_examples=400, deadline=None)
@given(api_prompts)
def test_api_shaped_documents_import_or_give_issues(prompt):
    check(outcome_of(lambda: load_document(prompt, LOADERS)))


@settings(max_examples=400, deadline=None)
@given(ui_documents)
def test_ui_shaped_documents_import_or_give_issues(document):
    check(outcome_of(lambda: load_document(document, LOADERS)))


def _mutate(document: Any, data: st.DataObject) -> Any:
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 4))):
        path = []
        target = document
        while isinstance(target, dict | list) and target and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(list(target) if isinstance(target, dict) else
                                            list(range(len(target)))))  # fmt: skip
            path.append((target, key))
            target = target[key]
        if not path:
            continue
        parent, key = path[-1]
        action = data.draw(st.sampled_from(["delete", "replace", "link", "cycle"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "link":
            parent[key] = data.draw(links)
        elif action == "cycle" and isinstance(parent, dict) and isinstance(document, dict):
            parent[key] = [data.draw(st.sampled_from(list(document) or ["1"])), 0]
        else:
            parent[key] = data.draw(json_values)
    return document


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(TEMPLATES)), st.data())
def test_mutated_templates_import_or_give_issues(name, data):
    document = _mutate(TEMPLATES[name], data)
    check(outcome_of(lambda: load_document(document, LOADERS)))


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = PNG_SIGNATURE
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body))
    return out


CHUNK_KINDS = st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"IHDR", b"IEND"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(CHUNK_KINDS, st.binary(max_size=64)), max_size=5),
    st.binary(max_size=40),
)
def test_damaged_pngs_give_issues(chunks, tail):
    check(outcome_of(lambda: load_bytes(_png(chunks) + tail, LOADERS)))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(TEMPLATES)), st.data())
def test_pngs_with_mutated_chunks_import_or_give_issues(name, data):
    prompt = _mutate(TEMPLATES[name.replace("_ui", "_api")], data)
    graph = _mutate(TEMPLATES[name.replace("_api", "_ui")], data)
    chunks = [(b"tEXt", b"prompt\0" + json.dumps(prompt).encode("latin-1", "replace"))]
    chunks.append((b"iTXt", b"workflow\0\1\0\0\0" + zlib.compress(json.dumps(graph).encode())))
    check(outcome_of(lambda: load_bytes(_png(chunks), LOADERS)))


def test_huge_and_deep_files_give_issues_not_crashes():
    many = {str(i): {"class_type": "EmptyLatentImage", "inputs": {}} for i in range(6000)}
    issues = outcome_of(lambda: load_document(many, LOADERS))
    assert isinstance(issues, list) and issues[0].code == "too_large"
    ui = {"nodes": [{"id": i, "type": "Reroute"} for i in range(6000)], "links": []}
    assert outcome_of(lambda: load_document(ui, LOADERS))[0].code == "too_large"
    deep = b"[" * 200_000 + b"]" * 200_000
    check(outcome_of(lambda: load_bytes(deep, LOADERS)))
    bomb = _png([(b"zTXt", b"prompt\0\0" + zlib.compress(b"[" * 50_000_000))])
    check(outcome_of(lambda: load_bytes(bomb, LOADERS)))


def test_a_long_reroute_loop_and_a_cycle_are_issues():
    loop = {
        "nodes": [
            {"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}]},
            {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}]},
            {"id": 3, "type": "VAEDecode", "inputs": [{"name": "vae", "type": "VAE", "link": 1}]},
        ],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"]],
    }
    issues = outcome_of(lambda: load_document(loop, LOADERS))
    assert ("3", "vae", "missing_link") in {(i.node, i.input, i.code) for i in issues}
    cycle = copy.deepcopy(TEMPLATES["txt2img_api"])
    cycle["4"]["inputs"]["ckpt_name"] = ["8", 0]
    issues = outcome_of(lambda: load_document(cycle, LOADERS))
    assert {i.node for i in issues if i.code == "cycle"} >= {"4", "8"}
