"""Loading plugins: entry points, namespacing, isolation, API versions, and the catalog hooks."""

from __future__ import annotations

import logging

import pytest

import nodeflow
from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import load_catalog
from nodeflow.validate import validate
from nodeflow.workflow import Workflow

GOOD = """
from nodeflow import hookimpl, node, socket_type

NODEFLOW_API = 1

@socket_type(color="#123456")
class Word:
    "A word."

@node("Shout", category="text")
def shout(text: str = "hi") -> Word:
    "Upper-case a word."
    return Word()

@node("Echo", output_node=True)
def echo(word: Word) -> dict:
    "Report that a word arrived."
    return {"echo": True}

@hookimpl
def nodeflow_types():
    return [Word]

@hookimpl
def nodeflow_nodes():
    return [shout, echo]
"""

BROKEN_IMPORT = """
raise ImportError("this plugin needs a package that is not installed")
"""

BROKEN_HOOK = """
from nodeflow import hookimpl

@hookimpl
def nodeflow_nodes():
    raise RuntimeError("hook exploded")
"""

DUPLICATE = """
from nodeflow import hookimpl, node

@node("Shout")
def shout_again(text: str = "") -> str:
    "Same name, other plugin."
    return text

@hookimpl
def nodeflow_nodes():
    return [shout_again]
"""

FUTURE = """
from nodeflow import hookimpl, node

NODEFLOW_API = 2

@node("Later")
def later(text: str = "") -> str:
    "Written for a nodeflow that does not exist yet."
    return text

@hookimpl
def nodeflow_nodes():
    return [later]
"""


def names(catalog):
    return {p.name for p in catalog.plugins}


def test_entry_point_plugins_load_and_failures_are_isolated(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    install_plugin("broken-pack", "broken_pack", BROKEN_IMPORT, entry_name="broken")
    install_plugin("hooky-pack", "hooky_pack", BROKEN_HOOK, entry_name="hooky")
    catalog = load_catalog()

    assert catalog.node_plugins["good.Shout"] == "good"
    assert catalog.types.types["Word"].color == "#123456"
    good = catalog.plugin("good")
    assert (good.distribution, good.version, good.builtin) == ("good-pack", "1.0", False)
    assert good.api_version == nodeflow.PLUGIN_API_VERSION == 1

    failures = {f.plugin: f for f in catalog.failures}
    assert failures["broken"].stage == "import"
    assert failures["broken"].distribution == "broken-pack"
    assert "needs a package that is not installed" in failures["broken"].error
    assert "broken" not in names(catalog)
    assert failures["hooky"].stage == "nodeflow_nodes"
    assert failures["hooky"].distribution == "hooky-pack"
    assert "hook exploded" in failures["hooky"].error and "Traceback" in failures["hooky"].traceback
    assert "TextEncode" in catalog.nodes  # the built-in pack is unaffected


def test_the_builtin_pack_is_registered_through_the_entry_point_with_plain_names():
    catalog = load_catalog()
    builtin = catalog.plugin("nodes")
    assert builtin.builtin and builtin.distribution == "nodeflow"
    assert catalog.plugins[0] is builtin  # loaded first: it owns the plain names
    assert catalog.node_plugins["TextEncode"] == "nodes"


def test_third_party_node_types_are_namespaced_by_the_loader(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    catalog = load_catalog()
    assert "Shout" not in catalog.nodes
    spec = catalog.spec("good.Shout")
    assert spec.type == "good.Shout" and spec.to_json()["display_name"] == "Shout"
    workflow = Workflow.from_json(
        {
            "version": 1,
            "nodes": {
                "s": {"type": "good.Shout", "inputs": {"text": "hey"}},
                "e": {"type": "good.Echo", "inputs": {"word": {"from": "s.word"}}},
            },
        }
    )
    assert Executor(catalog).run(workflow).outputs == {"e": {"echo": True}}


def test_a_node_type_claiming_another_namespace_is_refused(install_plugin):
    source = GOOD.replace('@node("Shout"', '@node("nodes.Shout"')
    install_plugin("sneaky-pack", "sneaky_pack", source, entry_name="sneaky")
    catalog = load_catalog()
    (failure,) = [f for f in catalog.failures if f.plugin == "sneaky"]
    assert "names another namespace" in failure.error and "sneaky.Shout" in failure.error
    assert "sneaky.Echo" in catalog.nodes


def test_a_duplicate_node_type_is_refused_naming_both_distributions(install_plugin):
    """Two distributions with one plugin name would register the same namespaced types."""
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    install_plugin("other-pack", "copycat_pack", DUPLICATE, entry_name="good")
    catalog = load_catalog()
    assert catalog.node_plugins["good.Shout"] == "good"
    assert catalog.plugin("good").distribution == "good-pack"  # the first by name keeps it
    (failure,) = [f for f in catalog.failures if f.plugin == "good"]
    assert failure.stage == "register" and failure.distribution == "other-pack"
    assert "'good-pack'" in failure.error and "'other-pack'" in failure.error


def test_a_duplicate_plain_node_type_is_refused_naming_both_plugins():
    """Among built-in (plain-named) plugins the node type itself collides."""
    from types import SimpleNamespace

    from nodeflow import hookimpl, node

    @node("TextEncode")
    def text_encode(text: str = "") -> str:
        """A second TextEncode."""
        return text

    local = SimpleNamespace(nodeflow_nodes=hookimpl(lambda: [text_encode]))
    catalog = load_catalog(plugins=[("local", local)])
    assert catalog.node_plugins["TextEncode"] == "nodes"
    (failure,) = [f for f in catalog.failures if f.plugin == "local"]
    assert "'TextEncode'" in failure.error and "'local'" in failure.error
    assert "'nodes' (distribution 'nodeflow')" in failure.error


def test_disabled_plugins_are_not_loaded(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    catalog = load_catalog(disabled={"good"})
    assert not any(t.startswith("good.") for t in catalog.nodes)
    assert "good" not in names(catalog)
    assert [(p.name, p.distribution) for p in catalog.disabled] == [("good", "good-pack")]


def test_builtin_only_is_safe_mode(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    install_plugin("broken-pack", "broken_pack", BROKEN_IMPORT, entry_name="broken")
    catalog = load_catalog(builtin_only=True)
    assert names(catalog) == {"nodes"}
    assert all(catalog.node_plugins[t] == "nodes" for t in catalog.nodes)
    assert not catalog.failures  # the broken plugin was never imported
    assert {"good", "broken"} <= {p.name for p in catalog.disabled}


def test_an_api_version_mismatch_is_reported_and_the_plugin_not_loaded(install_plugin):
    install_plugin("future-pack", "future_pack", FUTURE, entry_name="future")
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    catalog = load_catalog()
    (failure,) = [f for f in catalog.failures if f.plugin == "future"]
    assert failure.stage == "api_version" and failure.distribution == "future-pack"
    assert "targets nodeflow plugin API 2" in failure.error
    assert "provides plugin API 1" in failure.error and "future-pack" in failure.error
    assert "future" not in names(catalog) and "future.Later" not in catalog.nodes
    assert "good.Shout" in catalog.nodes


def test_an_api_version_may_list_several_and_must_be_integers(install_plugin):
    install_plugin("both-pack", "both_pack", FUTURE.replace("= 2", "= (1, 2)"), entry_name="both")
    install_plugin("odd-pack", "odd_pack", FUTURE.replace("= 2", '= "1"'), entry_name="odd")
    catalog = load_catalog()
    assert "both.Later" in catalog.nodes and catalog.plugin("both").api_version == 1
    (failure,) = [f for f in catalog.failures if f.plugin == "odd"]
    assert "must be an integer" in failure.error


def test_nodes_with_unregistered_socket_types_are_refused(install_plugin):
    install_plugin(
        "orphan-pack",
        "orphan_pack",
        GOOD.replace("return [Word]", "return []"),
        entry_name="orphan",
    )
    catalog = load_catalog()
    assert "orphan.Shout" not in catalog.nodes
    failures = [f for f in catalog.failures if f.plugin == "orphan"]
    assert "unregistered socket types ['Word']" in failures[0].error


LOADERS = """
from nodeflow import Context, hookimpl, node

def read_upper(path):
    return open(path).read().upper()

@node("ReadText")
def read_text(ctx: Context, path: str) -> str:
    "Read a file with whatever loader its suffix has."
    return ctx.loaders.for_path(path)(path)

@hookimpl
def nodeflow_loaders():
    return {".shout.txt": read_upper, "shouter": read_upper}

@hookimpl
def nodeflow_nodes():
    return [read_text]
"""


def test_nodeflow_loaders_are_looked_up_by_suffix_or_kind(install_plugin, tmp_path):
    install_plugin("loud-pack", "loud_pack", LOADERS, entry_name="loud")
    install_plugin(
        "rival-pack", "rival_pack", LOADERS.replace('"shouter"', '"rival"'), entry_name="rival"
    )
    catalog = load_catalog()
    owners = {k: v for k, v in catalog.loaders.owners.items() if v in ("loud", "rival")}
    assert owners == {".shout.txt": "loud", "shouter": "loud"}  # all of rival's or none
    (failure,) = [f for f in catalog.failures if f.plugin == "rival"]
    assert failure.stage == "nodeflow_loaders"
    assert "'.shout.txt'" in failure.error and "'loud'" in failure.error
    assert catalog.loaders.get("shouter") is catalog.loaders.for_path("A.SHOUT.TXT")
    with pytest.raises(LookupError, match=r"no loader for .x\.txt. \(loaders for: .*\.shout\.txt"):
        catalog.loaders.for_path("x.txt")

    (tmp_path / "note.shout.txt").write_text("hello")
    workflow = Workflow.from_json(
        {"version": 1, "nodes": {"r": {"type": "loud.ReadText", "inputs": {"path": "x"}}}}
    ).with_values({("r", "path"): str(tmp_path / "note.shout.txt")})
    result = Executor(catalog).run(workflow, targets=["r"])
    assert result.values["r"]["string"] == "HELLO"


NOTES = """
from typing import Annotated

from nodeflow import FileKind, Widget, hookimpl, node

@node("ReadNote", output_node=True)
def read_note(path: Annotated[str, Widget(files="notes")]) -> dict:
    "Report a note's name."
    return {"note": path}

@hookimpl
def nodeflow_loaders():
    return {"notes": FileKind(lambda env: [env.models_dir / "notes"], what="note")}

@hookimpl
def nodeflow_nodes():
    return [read_note]
"""


def test_nodeflow_loaders_file_kinds_let_validation_check_a_plugins_files(install_plugin, tmp_path):
    install_plugin("notes-pack", "notes_pack", NOTES, entry_name="notes")
    install_plugin("rival-notes", "rival_notes", NOTES, entry_name="copy")  # claims "notes" too
    install_plugin(
        "dotted-pack",
        "dotted_pack",
        NOTES.replace('{"notes":', '{".notes":'),
        entry_name="dotted",
    )
    catalog = load_catalog()
    assert catalog.loaders.owners["notes"] == "notes"
    assert catalog.loaders.file_kind("notes").what == "note"
    assert catalog.loaders.get("notes") is None  # a file kind is no loader
    failures = {f.plugin: f for f in catalog.failures if f.stage == "nodeflow_loaders"}
    assert "'notes'" in failures["copy"].error and "'copy'" in failures["copy"].error
    assert "need the kind's name" in failures["dotted"].error

    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    workflow = Workflow.from_json(
        {"version": 1, "nodes": {"r": {"type": "notes.ReadNote", "inputs": {"path": "a.txt"}}}}
    )
    (issue,) = validate(workflow, catalog, env=env)[1]
    assert (issue.node, issue.input, issue.code) == ("r", "path", "file_not_found")
    assert issue.message == f"no note 'a.txt' in {tmp_path / 'models' / 'notes'}"
    (tmp_path / "models" / "notes").mkdir(parents=True)
    (tmp_path / "models" / "notes" / "a.txt").write_text("hi")
    assert validate(workflow, catalog, env=env)[1] == []


LISTENERS = """
from nodeflow import hookimpl

SEEN = []

def listen(event):
    SEEN.append(event.type)

def explode(event):
    raise RuntimeError("listener exploded")

@hookimpl
def nodeflow_event_listeners():
    return [explode, listen]
"""


def test_nodeflow_event_listeners_see_every_run_and_a_raising_one_is_isolated(
    install_plugin, caplog, tmp_path
):
    import importlib

    install_plugin("ears-pack", "ears_pack", LISTENERS, entry_name="ears")
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    catalog = load_catalog()
    assert [plugin for plugin, _ in catalog.listeners if plugin == "ears"] == ["ears", "ears"]
    workflow = Workflow.from_json(
        {
            "version": 1,
            "nodes": {
                "s": {"type": "good.Shout"},
                "e": {"type": "good.Echo", "inputs": {"word": {"from": "s.word"}}},
            },
        }
    )
    executor = Executor(catalog, env=Environment.from_dirs(tmp_path, tmp_path, tmp_path))
    with caplog.at_level(logging.DEBUG, logger="nodeflow.executor"):
        result = executor.run(workflow)
    assert result.ok
    seen = importlib.import_module("ears_pack").SEEN
    assert seen[0] == "run.started" and seen[-1] == "run.finished"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'ears'" in errors[0].getMessage()  # the traceback once
    assert "listener exploded" in errors[0].exc_text


def test_plugin_listener_hook_returning_junk_is_a_failure(install_plugin):
    install_plugin(
        "junk-pack",
        "junk_pack",
        "from nodeflow import hookimpl\n\n@hookimpl\ndef nodeflow_event_listeners():\n"
        "    return ['not callable']\n",
        entry_name="junk",
    )
    catalog = load_catalog()
    (failure,) = [f for f in catalog.failures if f.plugin == "junk"]
    assert failure.stage == "nodeflow_event_listeners" and "not callable" in failure.error


def test_nodeflow_types_registers_socket_types_and_refuses_a_clash_naming_both(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    clash = GOOD.replace('color="#123456"', 'color="#654321"')
    install_plugin("zclash-pack", "clash_pack", clash, entry_name="clash")
    catalog = load_catalog()
    assert catalog.types.owners["Word"] == "good" and catalog.types.types["Word"].color == "#123456"
    failures = [f for f in catalog.failures if f.plugin == "clash"]
    assert failures[0].stage == "nodeflow_types"
    assert "'Word'" in failures[0].error and "'good'" in failures[0].error
