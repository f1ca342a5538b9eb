from nodeflow.plugins import load_catalog

GOOD = """
from nodeflow import hookimpl, node, socket_type

@socket_type(color="#123456")
class Word:
    "A word."

@node("Shout", category="text")
def shout(text: str = "hi") -> Word:
    "Upper-case a word."
    return Word()

@hookimpl
def nodeflow_types():
    return [Word]

@hookimpl
def nodeflow_nodes():
    return [shout]
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

@node("Whisper")
def whisper(text: str = "") -> str:
    "A name nobody else uses."
    return text

@hookimpl
def nodeflow_nodes():
    return [shout_again, whisper]
"""


def test_entry_point_plugins_load_and_failures_are_isolated(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    install_plugin("broken-pack", "broken_pack", BROKEN_IMPORT, entry_name="broken")
    install_plugin("hooky-pack", "hooky_pack", BROKEN_HOOK, entry_name="hooky")
    catalog = load_catalog()

    assert catalog.node_plugins["Shout"] == "good"
    assert catalog.types.types["Word"].color == "#123456"
    good = next(p for p in catalog.plugins if p.name == "good")
    assert (good.distribution, good.version, good.builtin) == ("good-pack", "1.0", False)

    failures = {f.plugin: f for f in catalog.failures}
    assert failures["broken"].stage == "import"
    assert failures["broken"].distribution == "broken-pack"
    assert "needs a package that is not installed" in failures["broken"].error
    assert "broken" not in {p.name for p in catalog.plugins}
    assert failures["hooky"].stage == "nodeflow_nodes"
    assert "hook exploded" in failures["hooky"].error and "Traceback" in failures["hooky"].traceback


def test_the_builtin_pack_is_registered_through_the_entry_point(install_plugin):
    catalog = load_catalog()
    builtin = next(p for p in catalog.plugins if p.name == "nodes")
    assert builtin.builtin and builtin.distribution == "nodeflow"
    assert catalog.node_plugins["TextEncode"] == "nodes"


def test_a_duplicate_node_type_is_refused_naming_both_plugins(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    install_plugin("other-pack", "copycat_pack", DUPLICATE, entry_name="copycat")
    catalog = load_catalog()
    assert catalog.node_plugins["Shout"] == "good"  # the first by distribution name keeps it
    assert catalog.node_plugins["Whisper"] == "copycat"  # the rest of the plugin still loads
    (failure,) = [f for f in catalog.failures if f.plugin == "copycat"]
    assert "'Shout'" in failure.error and "'copycat'" in failure.error and "'good'" in failure.error


def test_disabled_plugins_are_not_loaded(install_plugin):
    install_plugin("good-pack", "good_pack", GOOD, entry_name="good")
    catalog = load_catalog(disabled={"good"})
    assert "Shout" not in catalog.nodes and "good" not in {p.name for p in catalog.plugins}


def test_nodes_with_unregistered_socket_types_are_refused(install_plugin):
    install_plugin(
        "orphan-pack",
        "orphan_pack",
        GOOD.replace("return [Word]", "return []"),
        entry_name="orphan",
    )
    catalog = load_catalog()
    assert "Shout" not in catalog.nodes
    (failure,) = [f for f in catalog.failures if f.plugin == "orphan"]
    assert "unregistered socket types ['Word']" in failure.error
