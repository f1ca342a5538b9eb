"""Subgraphs: definitions in the workflow file used as node types, expanded when bound."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from nodeflow.errors import WorkflowInvalid
from nodeflow.validate import bind, validate
from nodeflow.workflow import Workflow, json_schema

DOUBLE = {
    "description": "x scaled by f (2 unless given)",
    "inputs": {"x": {"type": "Number"}, "f": {"type": "FLOAT", "default": 2}},
    "outputs": {"y": {"from": "s.number", "type": "Number"}},
    "nodes": {
        "s": {
            "type": "Scale",
            "inputs": {"x": {"from": "inputs.x"}, "factor": {"from": "inputs.f"}},
        }
    },
}
QUAD = {
    "inputs": {"x": {"type": "Number"}},
    "outputs": {"y": {"from": "b.y", "type": "Number"}, "half": {"from": "a.y", "type": "Number"}},
    "nodes": {
        "a": {"type": "Double", "inputs": {"x": {"from": "inputs.x"}}},
        "b": {"type": "Double", "inputs": {"x": {"from": "a.y"}}},
    },
}
WITH_SUBGRAPH = {
    "version": 1,
    "subgraphs": {"Double": DOUBLE},
    "nodes": {
        "c": {"type": "Constant", "inputs": {"value": 3}},
        "d": {"type": "Double", "inputs": {"x": {"from": "c.integer"}}},
        "o": {"type": "Show", "inputs": {"x": {"from": "d.y"}}},
    },
}
FLATTENED = {
    "version": 1,
    "nodes": {
        "c": {"type": "Constant", "inputs": {"value": 3}},
        "s": {"type": "Scale", "inputs": {"x": {"from": "c.integer"}, "factor": 2}},
        "o": {"type": "Show", "inputs": {"x": {"from": "s.number"}}},
    },
}


def doc(**changes) -> dict:
    data = copy.deepcopy(WITH_SUBGRAPH)
    data.update(copy.deepcopy(changes))
    return data


def located(issues):
    return sorted((i.node or "", i.input or "", i.code) for i in issues)


def test_subgraphs_are_optional_and_round_trip_unchanged():
    assert "subgraphs" not in Workflow.from_json(FLATTENED).to_json()
    data = Workflow.from_json(WITH_SUBGRAPH).to_json()
    assert data == WITH_SUBGRAPH
    assert Workflow.loads(Workflow.from_json(data).dumps()).to_json() == WITH_SUBGRAPH
    assert "Subgraph" in json_schema()["$defs"]


def test_the_reserved_inputs_id_and_unknown_keys_in_a_definition_are_refused():
    bad = doc(subgraphs={"Double": dict(DOUBLE, nodes={"inputs": {"type": "Constant"}})})
    with pytest.raises(WorkflowInvalid, match="reserved"):
        Workflow.from_json(bad)
    typo = doc(subgraphs={"Double": dict(DOUBLE, output={})})
    with pytest.raises(WorkflowInvalid) as caught:
        Workflow.from_json(typo)
    assert caught.value.issues[0].code == "unknown_key"
    assert "outputs" in caught.value.issues[0].message  # the suggestion


def test_a_subgraph_gives_the_outputs_and_cache_keys_of_its_flattened_form(executor, calls):
    flat = executor.run(Workflow.from_json(FLATTENED))
    assert flat.ok and flat.outputs == {"o": {"value": 6.0, "title": ""}}
    keys = executor.cache_keys(Workflow.from_json(FLATTENED))
    calls.clear()
    nested = executor.run(Workflow.from_json(WITH_SUBGRAPH))
    assert nested.ok and nested.outputs == flat.outputs
    assert calls == [] and sorted(nested.cached) == ["c", "d/s", "o"]  # the same keys
    sub_keys = executor.cache_keys(Workflow.from_json(WITH_SUBGRAPH))
    assert sub_keys == {"c": keys["c"], "d/s": keys["s"], "o": keys["o"]}


def test_an_instances_cache_key_covers_its_definition(executor, calls):
    executor.run(Workflow.from_json(WITH_SUBGRAPH))
    changed = doc()
    changed["subgraphs"]["Double"]["nodes"]["s"]["inputs"]["mode"] = "div"
    calls.clear()
    result = executor.run(Workflow.from_json(changed))
    assert result.outputs["o"]["value"] == 1.5
    assert calls == ["d/s", "o"] and result.cached == ["c"]


def test_instance_values_and_defaults_feed_the_declared_inputs(executor):
    given = doc()
    given["nodes"]["d"]["inputs"]["f"] = 5
    assert executor.run(Workflow.from_json(given)).outputs["o"]["value"] == 15.0


def test_nested_subgraphs_expand_with_path_ids(executor, calls):
    data = doc(subgraphs={"Double": DOUBLE, "Quad": QUAD})
    data["nodes"]["d"]["type"] = "Quad"
    data["nodes"]["h"] = {"type": "Show", "inputs": {"x": {"from": "d.half"}, "title": "h"}}
    result = executor.run(Workflow.from_json(data))
    assert result.ok, result.error
    assert result.outputs["o"]["value"] == 12.0 and result.outputs["h"]["value"] == 6.0
    assert sorted(calls) == ["c", "d/a/s", "d/b/s", "h", "o"]


def test_running_an_instance_as_a_target_runs_what_its_outputs_need(executor, calls):
    data = doc(subgraphs={"Double": DOUBLE, "Quad": QUAD})
    data["nodes"]["d"]["type"] = "Quad"
    result = executor.run(Workflow.from_json(data), targets=["d"])
    assert result.ok and sorted(calls) == ["c", "d/a/s", "d/b/s"]


def test_a_cycle_through_subgraph_definitions_is_refused():
    loop_a = {
        "inputs": {"x": {"type": "Number"}},
        "outputs": {"y": {"from": "b.y", "type": "Number"}},
        "nodes": {"b": {"type": "LoopB", "inputs": {"x": {"from": "inputs.x"}}}},
    }
    loop_b = {
        "inputs": {"x": {"type": "Number"}},
        "outputs": {"y": {"from": "a.y", "type": "Number"}},
        "nodes": {"a": {"type": "LoopA", "inputs": {"x": {"from": "inputs.x"}}}},
    }
    data = doc(subgraphs={"Double": DOUBLE, "LoopA": loop_a, "LoopB": loop_b})
    data["nodes"]["d"]["type"] = "LoopA"
    with pytest.raises(WorkflowInvalid) as caught:
        bind(Workflow.from_json(data), _catalog())
    issues = caught.value.issues
    assert located(issues) == [("d", "", "subgraph_cycle")]
    assert "LoopA -> LoopB -> LoopA" in issues[0].message
    unused = doc(subgraphs={"Double": DOUBLE, "LoopA": loop_a, "LoopB": loop_b})
    _, issues = validate(Workflow.from_json(unused), _catalog())
    assert located(issues) == [("", "", "subgraph_cycle")]


def test_errors_inside_an_instance_name_the_instance_and_the_inner_node():
    data = doc()
    data["subgraphs"]["Double"]["nodes"]["s"]["inputs"]["mode"] = "pow"
    data["nodes"]["d"]["inputs"]["colour"] = 1
    _, issues = validate(Workflow.from_json(data), _catalog())
    assert located(issues) == [("d", "colour", "unknown_input"), ("d/s", "mode", "invalid_value")]


def test_a_missing_declared_input_is_reported_once_at_the_instance():
    data = doc()
    del data["nodes"]["d"]["inputs"]["x"]
    _, issues = validate(Workflow.from_json(data), _catalog())
    assert located(issues) == [("d", "x", "missing_input")]


def test_declared_types_are_checked_against_the_inner_nodes():
    data = doc()
    data["subgraphs"]["Double"]["inputs"]["x"]["type"] = "STRING"
    data["subgraphs"]["Double"]["outputs"]["y"]["type"] = "Integer"
    data["subgraphs"]["Double"]["outputs"]["z"] = {"from": "gone.number", "type": "Number"}
    _, issues = validate(Workflow.from_json(data), _catalog())
    assert located(issues) == [
        ("d", "", "subgraph_output"),
        ("d", "", "subgraph_output"),
        ("d/s", "x", "type_mismatch"),
    ]
    assert any("'gone.number'" in i.message for i in issues)


def test_an_unknown_output_of_an_instance_is_reported_at_its_consumer():
    data = doc()
    data["nodes"]["o"]["inputs"]["x"] = {"from": "d.yy"}
    _, issues = validate(Workflow.from_json(data), _catalog())
    assert located(issues) == [("o", "x", "missing_output")]
    assert "'y'" in issues[0].message  # the suggestion


def test_modes_inside_a_subgraph_travel_with_its_copies(executor, calls):
    data = doc()
    data["subgraphs"]["Double"]["nodes"]["s"]["mode"] = "bypass"
    result = executor.run(Workflow.from_json(data))
    assert result.outputs["o"]["value"] == 3.0 and "d/s" not in calls
    data["subgraphs"]["Double"]["nodes"]["s"]["mode"] = "mute"
    with pytest.raises(WorkflowInvalid) as caught:
        executor.run(Workflow.from_json(data))
    assert located(caught.value.issues) == [("", "", "no_output")]


def test_a_muted_instance_mutes_what_only_it_feeds(executor, calls):
    data = doc()
    data["nodes"]["d"]["mode"] = "mute"
    data["nodes"]["d"]["inputs"]["nonsense"] = 1  # a muted node's own problems are not reported
    data["nodes"]["o2"] = {"type": "Show", "inputs": {"x": {"from": "c.integer"}, "title": "2"}}
    result = executor.run(Workflow.from_json(data))
    assert result.ok and list(result.outputs) == ["o2"] and calls == ["c", "o2"]
    _, issues = validate(Workflow.from_json(data), _catalog(), targets=["d"])
    assert located(issues) == [("d", "", "inactive_target")]


def test_a_bypassed_instance_passes_its_same_typed_input_through(executor, calls):
    data = doc()
    data["nodes"]["d"]["mode"] = "bypass"
    result = executor.run(Workflow.from_json(data))
    assert result.outputs["o"]["value"] == 3.0 and calls == ["c", "o"]
    data["subgraphs"]["Double"]["inputs"]["x"]["type"] = "Integer"
    data["subgraphs"]["Double"]["nodes"]["s"]["inputs"]["x"] = {"from": "c.integer"}
    _, issues = validate(Workflow.from_json(data), _catalog())
    assert located(issues) == [("d", "", "bypass_no_input")]


def test_the_saved_workflow_of_a_run_keeps_its_subgraphs(executor):
    bound = bind(Workflow.from_json(WITH_SUBGRAPH), executor.catalog)
    assert bound.workflow.to_json() == WITH_SUBGRAPH
    assert sorted(bound.nodes) == ["c", "d/s", "o"]


def test_the_cli_runs_subgraphs(tmp_path, capsys, install_plugin):
    install_plugin(
        "nodeflow-testnodes",
        "subgraph_testnodes",
        "from testnodes import nodeflow_nodes, nodeflow_types\n",
        entry_name="testnodes",
    )
    from nodeflow.cli import main

    data = doc(subgraphs={"Double": copy.deepcopy(DOUBLE)})
    for entry in [*data["nodes"].values(), *data["subgraphs"]["Double"]["nodes"].values()]:
        if entry["type"] != "Double":
            entry["type"] = f"testnodes.{entry['type']}"
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(data))
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "d/s (testnodes.Scale)" in err and "3 ran, 0 cached" in err
    data["nodes"]["d"]["inputs"]["colour"] = 1
    path.write_text(json.dumps(data))
    assert main(["validate", str(path)]) == 2
    assert "d.colour" in capsys.readouterr().err


def test_the_api_runs_subgraphs(tmp_path):
    from server.test_app import Running

    async def scenario():
        async with Running(tmp_path) as srv:
            status, body = await srv.submit(WITH_SUBGRAPH)
            assert status == 201
            run = await srv.until_done(body["run_id"])
            assert run["status"] == "finished"
            assert run["outputs"] == {"o": {"value": 6.0, "title": ""}}
            assert run["workflow"]["subgraphs"] == WITH_SUBGRAPH["subgraphs"]
            bad = doc()
            bad["subgraphs"]["Double"]["nodes"]["s"]["inputs"]["mode"] = "pow"
            status, body = await srv.submit(bad)
            assert status == 400
            assert [(e["node"], e["input"]) for e in body["errors"]] == [("d/s", "mode")]

    asyncio.run(scenario())


def _catalog():
    import testnodes

    from nodeflow.plugins import load_catalog

    return load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])


def test_two_instances_fed_alike_have_one_key_and_a_later_run_finds_it_cached(executor, calls):
    data = doc()
    data["nodes"]["d2"] = {"type": "Double", "inputs": {"x": {"from": "c.integer"}}}
    data["nodes"]["o2"] = {"type": "Show", "inputs": {"x": {"from": "d2.y"}, "title": "2"}}
    keys = executor.cache_keys(Workflow.from_json(data))
    assert keys["d/s"] == keys["d2/s"] and keys["o"] != keys["o2"]  # o2's title differs
    executor.run(Workflow.from_json(WITH_SUBGRAPH))
    calls.clear()
    result = executor.run(Workflow.from_json(data))
    assert result.outputs["o2"]["value"] == 6.0 and calls == ["o2"]
