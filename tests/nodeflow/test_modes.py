"""Bypass and mute: part of the file format, resolved into a plain graph when it is bound."""

from __future__ import annotations

import asyncio
import json

import pytest
from testnodes import make_workflow

from nodeflow.errors import WorkflowInvalid
from nodeflow.validate import bind, validate
from nodeflow.workflow import Workflow, json_schema

CHAIN = {
    "c": ("Constant", {"value": 3}),
    "s": ("Scale", {"x": "@c.integer", "factor": 2}),
    "a": ("Add", {"a": "@s.number", "b": "@c.integer"}),
    "o": ("Show", {"x": "@a.number"}),
    "side": ("Scale", {"x": "@c.integer", "factor": 4}),
    "o2": ("Show", {"x": "@side.number", "title": "side"}),
}


def with_modes(nodes: dict, **modes: str) -> Workflow:
    data = make_workflow(nodes).to_json()
    for node_id, mode in modes.items():
        data["nodes"][node_id]["mode"] = mode
    return Workflow.from_json(data)


def located(issues):
    return sorted((i.node, i.input, i.code) for i in issues)


def test_modes_are_optional_and_a_normal_node_is_saved_as_before():
    plain = make_workflow(CHAIN)
    assert "mode" not in json.dumps(plain.to_json())
    bypassed = with_modes(CHAIN, s="bypass", side="mute")
    data = bypassed.to_json()
    assert data["nodes"]["s"]["mode"] == "bypass" and data["nodes"]["side"]["mode"] == "mute"
    assert "mode" not in data["nodes"]["c"]
    assert Workflow.from_json(data).to_json() == data
    node_schema = json_schema()["$defs"]["NodeEntry"]["properties"]["mode"]
    assert {"const": "bypass"} in node_schema["anyOf"] or "bypass" in json.dumps(node_schema)


def test_an_unknown_mode_is_refused_naming_the_node():
    data = make_workflow(CHAIN).to_json()
    data["nodes"]["s"]["mode"] = "skip"
    with pytest.raises(WorkflowInvalid) as caught:
        Workflow.from_json(data)
    assert [(i.node, i.code) for i in caught.value.issues] == [("s", "format")]


def test_a_bypassed_node_passes_its_same_typed_input_through(executor, calls):
    result = executor.run(with_modes(CHAIN, s="bypass"))
    assert result.ok
    assert result.outputs["o"]["value"] == 6.0  # 3 + 3: Scale's x went straight to Add.a
    assert "s" not in calls and "s" not in result.executed


def test_a_bypassed_nodes_descendants_get_the_keys_of_the_graph_without_it(executor, calls):
    without = {
        "c": ("Constant", {"value": 3}),
        "a": ("Add", {"a": "@c.integer", "b": "@c.integer"}),
        "o": ("Show", {"x": "@a.number"}),
    }
    first = executor.run(make_workflow(without))
    assert sorted(first.executed) == ["a", "c", "o"]
    calls.clear()
    again = executor.run(with_modes({k: CHAIN[k] for k in ("c", "s", "a", "o")}, s="bypass"))
    assert calls == [] and sorted(again.cached) == ["a", "c", "o"]
    assert again.outputs["o"]["value"] == 6.0


def test_bypass_follows_a_chain_of_bypassed_nodes(executor):
    scale = ("Scale", {"x": "@s.number", "factor": 10})
    nodes = dict(CHAIN, a=scale, o=("Show", {"x": "@a.number"}))
    bound = bind(with_modes(nodes, s="bypass", a="bypass"), executor.catalog)
    assert bound.nodes["o"].links["x"].source == "c.integer"
    assert "s" not in bound.nodes and "a" not in bound.nodes
    assert set(bound.graph.predecessors("o")) == {"c"}


def test_a_bypassed_output_without_an_input_of_its_type_is_an_error_naming_both():
    nodes = {
        "c": ("Constant", {"value": 3}),
        "i": ("ToInt", {"x": "@c.integer"}),  # INT output, only a Number input
        "k": ("Constant", {"value": "@i.int"}),
        "o": ("Show", {"x": "@k.integer"}),
    }
    catalog = _catalog()
    bound, issues = validate(with_modes(nodes, i="bypass"), catalog)
    assert bound is None
    assert located(issues) == [("i", None, "bypass_no_input")]  # and no "no_output"
    assert "'int'" in issues[0].message and "INT" in issues[0].message
    # an output nobody reads needs no pass-through
    unread = dict(nodes, k=("Constant", {}))
    assert validate(with_modes(unread, i="bypass"), catalog)[1] == []


def test_a_muted_node_and_what_only_it_feeds_do_not_run(executor, calls):
    result = executor.run(with_modes(CHAIN, s="mute"))
    assert result.ok
    assert sorted(calls) == ["c", "o2", "side"]  # a needs s.number; o needs a: muted with it
    assert set(result.outputs) == {"o2"}


def test_a_muted_optional_input_falls_back_to_its_default(executor, calls):
    nodes = dict(CHAIN, a=("Add", {"a": "@c.integer", "b": "@s.number"}))
    result = executor.run(with_modes(nodes, s="mute"))
    assert result.ok and result.outputs["o"]["value"] == 3.0  # b defaults to none: 3 + 0
    assert "s" not in calls


def test_a_muted_output_node_simply_does_not_run(executor, calls):
    result = executor.run(with_modes(CHAIN, o2="mute"))
    assert result.ok and set(result.outputs) == {"o"}
    assert "side" not in calls  # nothing else needed it


def test_a_muted_nodes_own_problems_are_not_reported(catalog):
    nodes = dict(
        CHAIN,
        broken=("Scale", {"x": "@ghost.integer", "factor": 99}),
        gone=("NoSuchType", {}),
        after=("Show", {"x": "@broken.number"}),
    )
    bound, issues = validate(with_modes(nodes, broken="mute", gone="mute"), catalog)
    assert issues == [] and "after" not in bound.nodes  # muted through its required input
    _, issues = validate(make_workflow(nodes), catalog)
    assert ("broken", "factor", "invalid_value") in located(issues)


def test_every_output_muted_or_a_muted_target_is_reported(catalog):
    _, issues = validate(with_modes(CHAIN, o="mute", o2="bypass"), catalog)
    assert located(issues) == [(None, None, "no_output")]
    assert "muted or bypassed" in issues[0].message
    _, issues = validate(with_modes(CHAIN, side="mute"), catalog, targets=["o2"])
    assert located(issues) == [("o2", None, "inactive_target")]


def test_the_cli_honours_modes(tmp_path, capsys, install_plugin):
    install_plugin(
        "nodeflow-testnodes",
        "modes_testnodes",
        "from testnodes import nodeflow_nodes, nodeflow_types\n",
        entry_name="testnodes",
    )
    from nodeflow.cli import main

    data = with_modes(CHAIN, s="bypass", side="mute").to_json()
    for entry in data["nodes"].values():
        entry["type"] = f"testnodes.{entry['type']}"
    path = tmp_path / "modes.json"
    path.write_text(json.dumps(data))
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "[1/3] c (testnodes.Constant)" in err and "3 ran, 0 cached" in err
    assert " s (" not in err and "side" not in err and "o2" not in err
    assert main(["validate", str(path)]) == 0


def test_the_api_honours_modes(tmp_path):
    from server.test_app import Running

    workflow = with_modes(CHAIN, s="bypass", side="mute").to_json()

    async def scenario():
        async with Running(tmp_path) as srv:
            status, body = await srv.submit(workflow)
            assert status == 201
            run = await srv.until_done(body["run_id"])
            assert run["status"] == "finished"
            assert run["outputs"] == {"o": {"value": 6.0, "title": ""}}
            assert run["workflow"]["nodes"]["s"]["mode"] == "bypass"  # history keeps the file
            status, body = await srv.submit(workflow, targets=["o2"])
            assert status == 400 and body["errors"][0]["code"] == "inactive_target"

    asyncio.run(scenario())


def _catalog():
    import testnodes

    from nodeflow.plugins import load_catalog

    return load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
