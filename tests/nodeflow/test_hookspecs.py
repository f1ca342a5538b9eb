"""Every hook is documented, implemented and exercised (datasette keeps itself honest the same way).

Each test fails for a new hookspec until it has a docstring, a section in docs/plugins.md, an
implementation in a plugin the tests load, and a test that names it.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

from nodeflow import hookspecs

HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("nodeflow_")
]
TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DOCS = REPO / "docs" / "plugins.md"


def _test_files() -> list[Path]:
    files = [p for p in TESTS.rglob("test_*.py") if "benchmarks" not in p.parts]
    files += list((REPO / "plugins").glob("*/tests/test_*.py"))
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_there_are_hooks():
    assert {
        "nodeflow_nodes",
        "nodeflow_types",
        "nodeflow_cli",
        "nodeflow_loaders",
        "nodeflow_routes",
        "nodeflow_web_extensions",
        "nodeflow_event_listeners",
    } <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 20, f"hookspec {hook} needs a docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_for_plugin_authors(hook):
    """docs/plugins.md has a section per hook, headed by its signature."""
    text = DOCS.read_text(encoding="utf-8")
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    heading = re.search(rf"^### `{hook}\(([^)]*)\)", text, re.MULTILINE)
    assert heading, f"docs/plugins.md needs a '### `{hook}(...)`' section"
    assert [p.split(":")[0].strip() for p in heading.group(1).split(",") if p.strip()] == [
        p.strip() for p in params.split(",") if p.strip()
    ], f"the {hook} heading in docs/plugins.md does not match the hookspec's parameters"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_tested_plugin(hook):
    """A hook no test plugin implements is a hook nobody knows works."""
    sources = [
        p.read_text()
        for p in TESTS.rglob("*.py")
        if p.name != Path(__file__).name and "benchmarks" not in p.parts
    ]
    sources += [p.read_text() for p in (REPO / "nodes").rglob("*.py")]
    sources += [p.read_text() for p in (REPO / "plugins").rglob("*.py")]
    assert any(f"def {hook}(" in text for text in sources), f"no plugin implements {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    """Some test function names the hook (in its name or its body): the test about that hook."""
    for path in _test_files():
        source = path.read_text()
        for fn in ast.walk(ast.parse(source)):
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
                body = ast.get_source_segment(source, fn) or ""
                if hook in fn.name or hook in body:
                    return
    pytest.fail(f"no test function names {hook}: write the test that shows it works")
