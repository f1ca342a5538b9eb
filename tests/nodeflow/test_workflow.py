import json

import pytest

from nodeflow.errors import WorkflowInvalid
from nodeflow.workflow import Link, Workflow, json_schema

DOC = {
    "version": 1,
    "nodes": {
        "c": {"type": "Constant", "inputs": {"value": 3}},
        "s": {"type": "Scale", "inputs": {"x": {"from": "c.integer"}, "factor": 2, "mode": "div"}},
        "o": {"type": "Show", "inputs": {"x": {"from": "s.number"}, "title": "t"}},
    },
    "ui": {"nodes": {"c": {"pos": [10, 20]}}, "groups": [{"title": "g", "bounding": [0, 0, 9, 9]}]},
}


def test_load_save_round_trip_keeps_the_ui_block(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(DOC))
    workflow = Workflow.load(path)
    assert workflow.nodes["s"].inputs["x"] == Link.to("c", "integer")
    assert workflow.nodes["s"].inputs["factor"] == 2
    workflow.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == DOC
    assert Workflow.load(tmp_path / "again.json") == workflow


def test_malformed_json_reports_line_and_column():
    with pytest.raises(WorkflowInvalid) as info:
        Workflow.loads('{"version": 1,\n  "nodes": {"a": }\n}', source="bad.json")
    (issue,) = info.value.issues
    assert issue.code == "json_syntax"
    assert "line 2, column 18" in issue.message
    assert "bad.json" in str(info.value)


@pytest.mark.parametrize(
    "mutate, node, input_, fragment",
    [
        (lambda d: d.update(extra=1), None, None, "unknown key 'extra'"),
        (lambda d: d["nodes"]["c"].update(typo=1), "c", None, "unknown key 'typo'"),
        (lambda d: d["nodes"]["s"]["inputs"]["x"].update(to="x"), "s", "x", "unknown key 'to'"),
    ],
)
def test_unknown_keys_are_errors_not_dropped(mutate, node, input_, fragment):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    with pytest.raises(WorkflowInvalid) as info:
        Workflow.from_json(doc)
    (issue,) = info.value.issues
    assert (issue.node, issue.input, issue.code) == (node, input_, "unknown_key")
    assert fragment in issue.message


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(node={}), "unknown key 'node'; did you mean 'nodes'?"),
        (lambda d: d.update(requires={"p": {"distributon": "x"}}), "did you mean 'distribution'?"),
        (lambda d: d["nodes"]["c"].update(input={}), "unknown key 'input'; did you mean 'inputs'?"),
        (lambda d: d["nodes"]["s"]["inputs"]["x"].update(form="x"), "did you mean 'from'?"),
        (lambda d: d.update(zzz=1), "unknown key 'zzz'"),  # nothing close: no suggestion
    ],
)
def test_an_unknown_key_gets_the_closest_allowed_one_suggested(mutate, fragment):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    with pytest.raises(WorkflowInvalid) as info:
        Workflow.from_json(doc)
    (issue,) = info.value.issues
    assert issue.message.endswith(fragment)
    with pytest.raises(WorkflowInvalid, match=r"no node 'cc' to set; did you mean 'c'\?"):
        Workflow.from_json(DOC).with_values({("cc", "value"): 1})


def test_bad_ids_links_and_versions_are_located():
    doc = {
        "version": 2,
        "nodes": {"bad id": {"type": "X"}, "ok": {"type": "X", "inputs": {"a": {"from": "nodot"}}}},
    }
    with pytest.raises(WorkflowInvalid) as info:
        Workflow.from_json(doc)
    located = {(i.node, i.input, i.code) for i in info.value.issues}
    assert located == {(None, None, "format"), ("bad id", None, "format"), ("ok", "a", "format")}


def test_with_values_sets_inputs_and_refuses_missing_nodes():
    workflow = Workflow.from_json(DOC).with_values({("c", "value"): 7, ("o", "x"): {"from": "c.x"}})
    assert workflow.nodes["c"].inputs["value"] == 7
    assert workflow.nodes["o"].inputs["x"] == Link.to("c", "x")
    with pytest.raises(WorkflowInvalid, match="no node 'zz'"):
        Workflow.from_json(DOC).with_values({("zz", "value"): 1})


def test_schema_describes_the_format():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"version", "nodes", "requires", "subgraphs", "ui"}
    assert "from" in json.dumps(schema)


@pytest.mark.parametrize("text", ['{"version": true}', '{"version": 1.0}', '{"version": "1"}'])
def test_the_version_is_exactly_the_integer_1(text):
    with pytest.raises(WorkflowInvalid, match="version must be the integer 1"):
        Workflow.loads(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_numbers_are_refused(constant):
    with pytest.raises(WorkflowInvalid, match=f"{constant} is not a JSON number"):
        Workflow.loads(f'{{"nodes": {{"a": {{"type": "X", "inputs": {{"v": {constant}}}}}}}}}')


@pytest.mark.parametrize(
    "text",
    ['{"ui": {"note": "\\ud800 x"}}', '{"nodes": {"a": {"type": "T", "inputs": {"\\udc00": 1}}}}'],
)
def test_unpaired_surrogates_are_refused_so_every_loaded_workflow_saves(text):
    with pytest.raises(WorkflowInvalid, match="unpaired surrogate"):
        Workflow.loads(text)


def test_unicode_text_is_saved_as_text(tmp_path):
    workflow = Workflow.from_json({"nodes": {"a": {"type": "T", "inputs": {"t": "héllo 🙂"}}}})
    workflow.save(tmp_path / "w.json")
    assert "héllo 🙂" in (tmp_path / "w.json").read_text(encoding="utf-8")
    assert Workflow.load(tmp_path / "w.json") == workflow
