"""Every hook is documented and exercised (datasette keeps itself honest the same way)."""

import inspect
from pathlib import Path

import pytest

from nodeflow import hookspecs

HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("nodeflow_")
]
TESTS = Path(__file__).resolve().parents[1]


def test_there_are_hooks():
    assert {"nodeflow_nodes", "nodeflow_types", "nodeflow_cli"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 20, f"hookspec {hook} needs a docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_tested_plugin(hook):
    """A hook no test plugin implements is a hook nobody knows works."""
    sources = [
        p.read_text()
        for p in TESTS.rglob("*.py")
        if p.name != Path(__file__).name and "benchmarks" not in p.parts
    ]
    sources += [p.read_text() for p in (TESTS.parent / "nodes").rglob("*.py")]
    assert any(f"def {hook}(" in text for text in sources), f"no plugin implements {hook}"
