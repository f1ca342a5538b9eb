"""Plugins' editor extensions in the browser: a custom widget from a plugin's ES module, and a
broken module that shows a notice naming its plugin while the editor keeps working.

A throwaway plugin (a fake installed distribution with a ``nodeflow`` entry point, made as in
tests/nodeflow/conftest.py ``install_plugin``) is put on a second ``nodeflow serve``'s PYTHONPATH.
It provides a node whose ``level`` widget asks for ``"x-nodeflow": {"widget": "tally"}`` and a
``nodeflow_web_extensions`` folder with ``main.js`` (registers the "tally" widget: plain DOM
buttons) and ``broken.js`` (throws in ``register``); a second plugin lists a script that does not
even parse.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webharness import (
    EMPTY_CANVAS,
    IN_CI,
    REPO,
    free_port,
    get_workflow,
    http_json,
    load_workflow,
    missing_requirement,
    node,
    open_editor,
    stop_server,
    wait_for_server,
    wait_until,
)

PLUGIN = "tallyext"
BROKEN_PLUGIN = "brokenext"

PLUGIN_SOURCE = """
from pathlib import Path
from typing import Annotated

from pydantic import Field

from nodeflow import hookimpl, node

STATIC = Path(__file__).resolve().parent / "tallyext_web"


@node("Tally", category="test")
def tally(
    level: Annotated[
        int, Field(ge=0, le=100, json_schema_extra={"x-nodeflow": {"widget": "tally"}})
    ] = 3,
    label: str = "x",
) -> str:
    return label * level


@hookimpl
def nodeflow_nodes():
    return [tally]


@hookimpl
def nodeflow_web_extensions():
    return {"static": STATIC, "scripts": ["main.js", "broken.js"], "styles": ["tally.css"]}
"""

MAIN_JS = """
export function register(api) {
  if (api.version !== 1) throw new Error("unexpected extension API version " + api.version);
  api.registerWidget("tally", (container, { value, schema, onChange, nodeId, input }) => {
    let current = typeof value === "number" ? value : schema.default;
    const out = document.createElement("span");
    out.className = "tally-value";
    out.dataset.testid = "tally-value";
    const button = document.createElement("button");
    button.dataset.testid = "tally-plus";
    button.textContent = "+1";
    const show = () => { out.textContent = `${nodeId}.${input} = ${current}`; };
    const click = () => { current += 1; show(); onChange(current); };
    button.addEventListener("click", click);
    show();
    container.append(out, button);
    return () => button.removeEventListener("click", click);
  });
  api.on("*", (event) => { (window.__tallyEvents ||= []).push(event.type); });
  api.notify("tally widget ready");
}
"""

BROKEN_JS = """
export function register(api) {
  throw new Error("tally exploded on purpose");
}
"""

SYNTAX_ERROR_JS = "export function register(api) { this is not javascript }\n"


def require_browser() -> None:
    reason = missing_requirement()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)


def write_plugin(site: Path, dist: str, module: str, source: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nodeflow]\n{dist} = {module}\n")


@pytest.fixture(scope="module")
def extension_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ``nodeflow serve`` with the two throwaway plugins installed; its base URL."""
    require_browser()
    root = tmp_path_factory.mktemp("web-extensions")
    site = root / "site"
    web = site / "tallyext_web"
    web.mkdir(parents=True)
    (web / "main.js").write_text(MAIN_JS)
    (web / "broken.js").write_text(BROKEN_JS)
    (web / "tally.css").write_text(".tally-value { font-weight: 700; }\n")
    write_plugin(site, PLUGIN, "tallyext_plugin", PLUGIN_SOURCE)
    bad_web = site / "brokenext_web"
    bad_web.mkdir()
    (bad_web / "main.js").write_text(SYNTAX_ERROR_JS)
    write_plugin(site, BROKEN_PLUGIN, "brokenext_plugin", (
        "from pathlib import Path\nfrom nodeflow import hookimpl\n\n"
        "@hookimpl\ndef nodeflow_web_extensions():\n"
        "    return {'static': Path(__file__).resolve().parent / 'brokenext_web',"
        " 'scripts': ['main.js']}\n"
    ))  # fmt: skip
    for name in ("models", "output", "input", "home"):
        (root / name).mkdir()
    port = free_port()
    log = root / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "NODEFLOW_HOME": str(root / "home"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    command = [
        sys.executable, "-m", "nodeflow", "serve", "--port", str(port), "--device", "cpu",
        "--models-dir", str(root / "models"), "--output-dir", str(root / "output"),
        "--input-dir", str(root / "input"), "--db", str(root / "runs.sqlite3"),
    ]  # fmt: skip
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(process, base, lambda: log.read_text()[-4000:])
        yield base
    finally:
        stop_server(process)


@pytest.fixture
def ext_page(browser: Any, extension_server: str, request: pytest.FixtureRequest,
             tmp_path: Path) -> Iterator[Any]:  # fmt: skip
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, base_url=extension_server
    )
    context.set_default_timeout(15_000)
    context.add_init_script(EMPTY_CANVAS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(tmp_path / "failure.png"))
            (tmp_path / "console.log").write_text("\n".join(console) + "\n")
            print("browser console (last 30):\n" + "\n".join(console[-30:]))
        context.close()


def wait_extensions(page: Any) -> list[dict[str, Any]]:
    page.wait_for_function("() => window.nodeflow && window.nodeflow.extensions().loaded === true")
    return page.evaluate("() => window.nodeflow.extensions().items")


def test_the_server_lists_the_extensions(extension_server: str) -> None:
    status, body = http_json(extension_server + "/api/extensions")
    assert status == 200, body
    by_plugin = {e["plugin"]: e for e in body["extensions"]}
    assert by_plugin[PLUGIN]["scripts"] == [f"/extensions/{PLUGIN}/main.js",
                                            f"/extensions/{PLUGIN}/broken.js"]  # fmt: skip
    status, nodes = http_json(extension_server + "/api/nodes")
    schema = nodes[f"{PLUGIN}.Tally"]["inputs"]["level"]["schema"]
    assert schema["x-nodeflow"] == {"widget": "tally"}, schema


def test_a_plugin_widget_renders_and_its_value_reaches_the_workflow(ext_page: Any) -> None:
    page = ext_page
    open_editor(page)
    items = wait_extensions(page)
    ok = {(i["plugin"], i["url"].rsplit("/", 1)[-1]): i["ok"] for i in items}
    assert ok[(PLUGIN, "main.js")] is True, items
    assert ok[(PLUGIN, "tally.css")] is True, items
    node_id = page.evaluate(f"() => window.nodeflow.addNode('{PLUGIN}.Tally', 100, 100)")
    tally = node(page, node_id)
    value = tally.locator("[data-testid=tally-value]")
    value.wait_for(state="visible")
    assert value.text_content() == f"{node_id}.level = 3"
    # the plugin's stylesheet applies
    assert value.evaluate("e => getComputedStyle(e).fontWeight") == "700"
    container = tally.locator("[data-testid=widget-level]")
    assert container.get_attribute("data-plugin") == PLUGIN
    # a plain text widget next to it is the editor's own
    assert tally.locator("[data-testid=widget-label]").evaluate("e => e.tagName") == "INPUT"

    plus = tally.locator("[data-testid=tally-plus]")
    plus.click()
    plus.click()
    wait_until(lambda: get_workflow(page)["nodes"][node_id]["inputs"].get("level") == 5, 5,
               "the widget's value in getWorkflow()")  # fmt: skip
    assert value.text_content() == f"{node_id}.level = 5"

    # changes from outside (undo: the two quick clicks are one step; redo) draw the widget again
    # with the value it now has
    page.evaluate("() => window.nodeflow.undo()")
    wait_until(lambda: value.text_content() == f"{node_id}.level = 3", 5, "the undone value")
    assert get_workflow(page)["nodes"][node_id]["inputs"].get("level", 3) == 3
    page.evaluate("() => window.nodeflow.redo()")
    wait_until(lambda: value.text_content() == f"{node_id}.level = 5", 5, "the redone value")
    plus = tally.locator("[data-testid=tally-plus]")  # drawn again: new elements
    plus.click()
    wait_until(lambda: get_workflow(page)["nodes"][node_id]["inputs"].get("level") == 6, 5,
               "the value after redo and one more click")  # fmt: skip

    # a loaded workflow's value is drawn
    workflow = {"version": 1, "nodes": {"t1": {"type": f"{PLUGIN}.Tally",
                                               "inputs": {"level": 42}}}}  # fmt: skip
    load_workflow(page, workflow)
    node(page, "t1").locator("[data-testid=tally-value]").wait_for(state="visible")
    assert node(page, "t1").locator("[data-testid=tally-value]").text_content() == "t1.level = 42"
    assert get_workflow(page)["nodes"]["t1"]["inputs"]["level"] == 42

    # notify() shows a notice naming the plugin
    notices = page.locator("[data-testid=notice]")
    assert any(f"{PLUGIN}: tally widget ready" in t for t in notices.all_text_contents())


def test_broken_extensions_show_a_notice_and_the_editor_keeps_working(ext_page: Any) -> None:
    page = ext_page
    open_editor(page)
    items = wait_extensions(page)
    failed = {(i["plugin"], i["url"].rsplit("/", 1)[-1]) for i in items if not i["ok"]}
    assert failed == {(PLUGIN, "broken.js"), (BROKEN_PLUGIN, "main.js")}, items
    notices = page.locator("[data-testid=notice]")
    wait_until(lambda: notices.count() >= 2, 5, "notices for the broken extensions")
    texts = notices.all_text_contents()
    assert any(BROKEN_PLUGIN in t and "failed to load" in t for t in texts), texts
    assert any(PLUGIN in t and "tally exploded on purpose" in t for t in texts), texts
    # the editor still works: built-in nodes, and the widget the good module registered
    node_id = page.evaluate("() => window.nodeflow.addNode('TextEncode', 100, 100)")
    page.locator(f'.react-flow__node[data-id="{node_id}"] [data-testid=widget-text]').fill("hi")
    wait_until(lambda: get_workflow(page)["nodes"][node_id]["inputs"].get("text") == "hi", 5,
               "the built-in widget's value")  # fmt: skip
    tally = page.evaluate(f"() => window.nodeflow.addNode('{PLUGIN}.Tally', 500, 100)")
    node(page, tally).locator("[data-testid=tally-plus]").wait_for(state="visible")
