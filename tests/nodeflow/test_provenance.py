"""Workflows record the plugins their node types come from, and name them when one is missing."""

from __future__ import annotations

import json

import pytest
import testnodes

from nodeflow.plugins import load_catalog
from nodeflow.provenance import plugin_of, requirements, stamp
from nodeflow.validate import validate
from nodeflow.workflow import Workflow, json_schema

PLUGIN = "from testnodes import nodeflow_nodes, nodeflow_types\n"
DOC = {
    "version": 1,
    "nodes": {
        "c": {"type": "maths.Constant", "inputs": {"value": 2}},
        "o": {"type": "maths.Show", "inputs": {"x": {"from": "c.integer"}}},
    },
}


@pytest.fixture
def maths(install_plugin):
    install_plugin("nodeflow-maths", "maths_pack", PLUGIN, entry_name="maths")


def test_old_files_without_requires_still_load_and_save_unchanged():
    workflow = Workflow.from_json(DOC)
    assert workflow.requires is None and "requires" not in workflow.to_json()
    assert "requires" in json_schema()["properties"]


def test_stamp_records_each_third_party_plugin_with_distribution_and_version(maths):
    catalog = load_catalog()
    workflow = Workflow.from_json(
        {**DOC, "nodes": {**DOC["nodes"], "t": {"type": "TextEncode", "inputs": {}}}}
    )
    stamped = stamp(workflow, catalog).to_json()
    assert stamped["requires"] == {"maths": {"distribution": "nodeflow-maths", "version": "1.0"}}
    again = Workflow.loads(json.dumps(stamped))  # what a saved file holds loads back
    assert again.requires["maths"].distribution == "nodeflow-maths"
    assert plugin_of("maths.Show") == "maths" and plugin_of("TextEncode") is None


def test_stamp_keeps_what_the_file_says_about_plugins_not_loaded_here():
    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    workflow = Workflow.from_json(
        {**DOC, "requires": {"maths": {"distribution": "nodeflow-maths", "version": "0.3"}}}
    )
    assert requirements(workflow, catalog)["maths"].version == "0.3"
    bare = Workflow.from_json({**DOC, "nodes": {"c": {"type": "Constant"}}})
    assert stamp(bare, catalog).requires is None  # plain names need no plugin


def test_unknown_requires_keys_are_refused_like_any_unknown_key():
    from nodeflow.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid, match="unknown key 'url'"):
        Workflow.from_json({**DOC, "requires": {"maths": {"url": "x"}}})


def test_a_missing_plugin_is_named_with_the_distribution_to_install():
    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    workflow = Workflow.from_json(
        {**DOC, "requires": {"maths": {"distribution": "nodeflow-maths", "version": "0.3"}}}
    )
    _, issues = validate(workflow, catalog)
    assert [(i.node, i.input, i.code) for i in issues] == [
        ("c", None, "missing_plugin"),
        ("o", None, "missing_plugin"),
    ]
    assert issues[0].message == (
        "node type 'maths.Constant' needs plugin 'maths' (distribution 'nodeflow-maths', saved "
        "with version 0.3), which is not installed: pip install nodeflow-maths"
    )
    _, issues = validate(Workflow.from_json(DOC), catalog)  # no provenance: still names it
    assert "plugin 'maths'" in issues[0].message and "not installed" in issues[0].message


def test_a_disabled_or_broken_plugin_is_said_to_be_so(maths, install_plugin):
    catalog = load_catalog(disabled={"maths"})
    (issue, _) = validate(Workflow.from_json(DOC), catalog)[1]
    assert issue.code == "missing_plugin" and "installed but disabled" in issue.message
    assert "distribution 'nodeflow-maths'" in issue.message  # known from the installed package

    install_plugin("nodeflow-broke", "broke_pack", "raise ImportError('no lib')\n", "broke")
    doc = {"version": 1, "nodes": {"x": {"type": "broke.Thing"}}}
    (issue,) = validate(Workflow.from_json(doc), load_catalog())[1]
    assert issue.code == "missing_plugin" and "failed to load (import: ImportError: no lib)" in (
        issue.message
    )


def test_a_loaded_plugin_without_the_type_is_an_unknown_type_naming_the_plugin(maths):
    doc = {"version": 1, "nodes": {"x": {"type": "maths.Nope"}}}
    (issue,) = validate(Workflow.from_json(doc), load_catalog())[1]
    assert issue.code == "unknown_node_type"
    assert "plugin 'maths' (nodeflow-maths 1.0) has no such node type" in issue.message


def test_save_image_embeds_the_requirements(maths, tmp_path):
    """The document nodes see as ctx.workflow (what SaveImage writes into PNGs) is stamped."""
    from nodeflow import Context, hookimpl, node
    from nodeflow.executor import Executor

    seen = {}

    @node("Keep", output_node=True)
    def keep(ctx: Context, x: testnodes.Number) -> dict:
        """Remember the workflow document."""
        seen.update(ctx.workflow)
        return {}

    class Local:
        nodeflow_nodes = staticmethod(hookimpl(lambda: [keep]))

    catalog = load_catalog(plugins=[("local", Local)])
    doc = {
        **DOC,
        "nodes": {**DOC["nodes"], "k": {"type": "Keep", "inputs": {"x": {"from": "c.integer"}}}},
    }
    assert Executor(catalog).run(Workflow.from_json(doc)).ok
    assert seen["requires"] == {"maths": {"distribution": "nodeflow-maths", "version": "1.0"}}
