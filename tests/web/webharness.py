"""Driving the browser editor through its DOM contract (the data-testid names in web/README.md).

Everything here goes through what a user can do (mouse, keyboard, files) except where a helper
says it uses ``window.nodeflow`` (loading a prepared graph, reading the current one).
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "web" / "dist"
WORKFLOWS = REPO / "workflows"
CHROMIUM = Path(os.environ.get("NODEFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

# Node states of the contract: data-state on [data-testid=node].
FINAL_STATES = ("done", "cached", "error")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def example(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text())


def small(workflow: dict[str, Any], *, steps: int = 2, prompt: str | None = None,
          prefix: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A copy of an example workflow made cheap: ``steps`` steps (its latent is already 64x64)."""
    workflow = json.loads(json.dumps(workflow))
    nodes = workflow["nodes"]
    nodes["sched"]["inputs"]["steps"] = steps
    if prompt is not None:
        nodes["pos"]["inputs"]["text"] = prompt
    if prefix is not None:
        nodes["save"]["inputs"]["prefix"] = prefix
    return workflow


def links(workflow: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Every link as (from node, output, to node, input)."""
    found = set()
    for node_id, node in workflow["nodes"].items():
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, dict) and "from" in value:
                source, _, output = value["from"].partition(".")
                found.add((source, output, node_id, name))
    return found


def positions(workflow: dict[str, Any]) -> dict[str, tuple[float, float]]:
    ui_nodes = (workflow.get("ui") or {}).get("nodes") or {}
    return {k: tuple(v["pos"]) for k, v in ui_nodes.items() if "pos" in v}


def assert_same_positions(a: dict[str, Any], b: dict[str, Any], tolerance: float = 0.5) -> None:
    pa, pb = positions(a), positions(b)
    assert pa.keys() == pb.keys(), (sorted(pa), sorted(pb))
    for key in pa:
        assert abs(pa[key][0] - pb[key][0]) <= tolerance, (key, pa[key], pb[key])
        assert abs(pa[key][1] - pb[key][1]) <= tolerance, (key, pa[key], pb[key])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


class Shots:
    """Numbered screenshots under the test's tmp_path (kept as test artifacts)."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0

    def __call__(self, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        try:
            self.page.screenshot(path=str(path))
        except Exception as exc:  # a screenshot must never hide the real failure
            path.with_suffix(".txt").write_text(f"screenshot failed: {exc!r}\n")
        return path


def missing_requirement() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return (f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
                "NODEFLOW_TEST_CHROMIUM)")  # fmt: skip
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (DIST / "index.html").is_file():
        return (f"the editor is not built ({DIST / 'index.html'} is missing; "
                "npm --prefix web ci && npm --prefix web run build)")  # fmt: skip
    return None


EMPTY_CANVAS = """if (localStorage.getItem("nodeflow.workflow") === null)
  localStorage.setItem("nodeflow.workflow", '{"version": 1, "nodes": {}}');"""
"""An init script: a browser that never saved a canvas opens on an empty one, not the default
graph a first visit shows (tests add it to their context unless they test the first visit)."""


# --- the page ------------------------------------------------------------------------------


def node(page: Any, node_id: str) -> Any:
    return page.locator(f'.react-flow__node[data-id="{node_id}"]')


def node_body(page: Any, node_id: str) -> Any:
    return node(page, node_id).locator("[data-testid=node]")


def open_editor(page: Any, timeout: float = 20_000) -> None:
    page.goto("/")
    wait_ready(page, timeout)


def wait_ready(page: Any, timeout: float = 20_000) -> None:
    page.wait_for_function("() => !!(window.nodeflow && window.nodeflow.ready === true)",
                           timeout=timeout)  # fmt: skip
    page.locator("[data-testid=canvas]").wait_for(state="visible", timeout=timeout)


def get_workflow(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.nodeflow.getWorkflow()")


def load_workflow(page: Any, workflow: dict[str, Any]) -> None:
    """Through ``window.nodeflow.loadWorkflow``; waits until every node is on the canvas."""
    page.evaluate("async (w) => { await window.nodeflow.loadWorkflow(w); }", workflow)
    for node_id in workflow["nodes"]:
        node(page, node_id).wait_for(state="attached", timeout=10_000)


def node_ids(page: Any) -> set[str]:
    return set(get_workflow(page)["nodes"])


def clear_canvas(page: Any) -> None:
    """The toolbar's clear button; its question about unsaved changes (``confirm-dialog``), if
    asked, is answered with ``confirm-ok``."""
    page.locator("[data-testid=clear-canvas]").click()
    confirm = page.locator("[data-testid=confirm-ok]")

    def cleared() -> bool:
        if confirm.is_visible():
            confirm.click()
        return not node_ids(page)

    wait_until(cleared, 10, "an empty canvas after clear-canvas")
    page.locator(".react-flow__node").first.wait_for(state="detached", timeout=5_000)


def find_free_point(page: Any, canvas: dict[str, float]) -> tuple[float, float]:
    """A point on the empty pane with room to its right and below (for a new node)."""
    point = page.evaluate(
        """([x0, y0, w, h]) => {
          const free = (x, y) => { const e = document.elementFromPoint(x, y);
            return e && e.closest('.react-flow__pane') && !e.closest('.react-flow__node'); };
          for (let y = y0 + 40; y < y0 + h - 200; y += 40)
            for (let x = x0 + 40; x < x0 + w - 300; x += 40) {
              let ok = true;
              for (let dx = 0; ok && dx <= 260; dx += 40)
                for (let dy = 0; ok && dy <= 160; dy += 40) ok = free(x + dx, y + dy);
              if (ok) return [x, y];
            }
          return null;
        }""",
        [canvas["x"], canvas["y"], canvas["width"], canvas["height"]],
    )
    assert point, "no free room on the canvas"
    return point[0], point[1]


def center(locator: Any) -> tuple[float, float]:
    locator.wait_for(state="visible", timeout=10_000)
    box = locator.bounding_box()
    assert box is not None, f"{locator} has no box"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def handle(page: Any, node_id: str, testid: str) -> Any:
    return node(page, node_id).locator(f'[data-testid="{testid}"]')


def drag(page: Any, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    # a first small move so the library sees a drag start, then the rest of the way
    page.mouse.move(start[0] + 3, start[1] + 3, steps=2)
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def connect(page: Any, source: str, output: str, target: str, input_name: str) -> None:
    """Drag from the source node's ``out-<output>`` handle to the target's ``in-<input>``."""
    start = center(handle(page, source, f"out-{output}"))
    end = center(handle(page, target, f"in-{input_name}"))
    drag(page, start, end)


def add_via_search(page: Any, node_type: str, x: float, y: float, query: str | None = None) -> str:
    """Double-click the pane at (x, y), type in the search box, Enter: the new node's id."""
    before = node_ids(page)
    target = page.evaluate(
        "([x, y]) => { const e = document.elementFromPoint(x, y);"
        " return e ? (e.closest('.react-flow__pane') ? 'pane' : e.outerHTML.slice(0, 200))"
        " : null }",
        [x, y],
    )
    assert target == "pane", f"({x}, {y}) is not on the empty pane but on {target}"
    page.evaluate(SEARCH_WATCH_JS)
    page.mouse.dblclick(x, y)
    search = page.locator("[data-testid=node-search]")
    try:
        search.wait_for(state="visible", timeout=2_000)
    except Exception:
        # Seen rarely (about 1 in 10 fresh pages, not reproducible on its own): the double-click
        # opens nothing. Record what happened and double-click once more, as a user would.
        events = page.evaluate("() => window.__nfSearchLog")
        warnings.warn(f"no node search after double-clicking ({x}, {y}); events: {events}",
                      stacklevel=2)  # fmt: skip
        page.mouse.dblclick(x, y)
        search.wait_for(state="visible", timeout=5_000)
    page.keyboard.type(query or node_type, delay=10)
    first = page.locator("[data-testid=search-result]").first
    first.wait_for(state="visible", timeout=5_000)
    wait_until(lambda: first.get_attribute("data-type") == node_type, 5,
               f"{node_type} to be the first search result")  # fmt: skip
    page.keyboard.press("Enter")
    new = wait_until(lambda: node_ids(page) - before, 5, f"a new {node_type} node")
    assert len(new) == 1, new
    (node_id,) = new
    body = node_body(page, node_id)
    body.wait_for(state="visible", timeout=5_000)
    assert body.get_attribute("data-node-type") == node_type
    search.wait_for(state="hidden", timeout=5_000)
    return node_id


SEARCH_WATCH_JS = """
() => {
  const log = window.__nfSearchLog = [];
  const t0 = performance.now();
  const t = () => Math.round(performance.now() - t0);
  if (window.__nfSearchObserver) window.__nfSearchObserver.disconnect();
  let open = !!document.querySelector('[data-testid=node-search]');
  window.__nfSearchObserver = new MutationObserver(() => {
    const now = !!document.querySelector('[data-testid=node-search]');
    if (now !== open) { open = now; log.push(['search ' + (now ? 'open' : 'closed'), t()]); }
  });
  window.__nfSearchObserver.observe(document.body, {subtree: true, childList: true});
  if (!window.__nfSearchListeners) {
    window.__nfSearchListeners = true;
    for (const type of ['mousedown', 'dblclick', 'focusout'])
      window.addEventListener(type, (e) => (window.__nfSearchLog || []).push(
        [type, String(e.target && e.target.className || e.target && e.target.tagName).slice(0, 40),
         e.detail, t()]), true);
  }
}
"""


def widget(page: Any, node_id: str, name: str) -> Any:
    return node(page, node_id).locator(f'[data-testid="widget-{name}"]')


def set_widget(page: Any, node_id: str, name: str, value: Any) -> None:
    """Set a widget the way a user does: pick an option, tick a box, or type and leave the field."""
    element = widget(page, node_id, name)
    element.wait_for(state="visible", timeout=5_000)
    tag = element.evaluate("e => e.tagName.toLowerCase() + ':' + (e.type || '')")
    if tag.startswith("select"):
        element.select_option(str(value))
    elif tag == "input:checkbox":
        element.set_checked(bool(value))
    else:
        element.fill(str(value))
        element.press("Tab")


def wait_state(page: Any, node_id: str, states: str | Iterable[str], timeout: float = 60) -> str:
    wanted = (states,) if isinstance(states, str) else tuple(states)
    body = node_body(page, node_id)
    return wait_until(
        lambda: (s := body.get_attribute("data-state")) in wanted and s,
        timeout,
        f"node {node_id} to be {'|'.join(wanted)} (it is {body.get_attribute('data-state')})",
        step=0.1,
    )


def wait_image(page: Any, node_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for the node's ``img[data-testid=node-image]`` to be loaded; its natural size."""
    image = node(page, node_id).locator("img[data-testid=node-image]").first
    image.wait_for(state="visible", timeout=timeout * 1000)
    return image.evaluate(
        "img => new Promise((resolve) => {"
        "  const done = () => resolve({src: img.currentSrc || img.src, complete: img.complete,"
        "    width: img.naturalWidth, height: img.naturalHeight});"
        "  if (img.complete) done(); else { img.addEventListener('load', done, {once: true});"
        "    img.addEventListener('error', done, {once: true}); }"
        "})"
    )


def queue(page: Any) -> None:
    page.locator("[data-testid=queue-button]").click()


# A MutationObserver that logs every committed change of each node's state, progress and preview,
# so that states shorter than any polling interval are still seen.
RECORDER_JS = """
() => {
  if (window.__nfRecorder) window.__nfRecorder.disconnect();
  const log = [];
  const last = {};
  const t0 = performance.now();
  const snap = () => {
    for (const el of document.querySelectorAll('[data-testid=node]')) {
      const id = el.getAttribute('data-node-id');
      const progress = el.querySelector('[data-testid=node-progress]');
      const preview = el.querySelector('img[data-testid=node-preview]');
      const entry = {
        id,
        state: el.getAttribute('data-state'),
        progress: progress ? [progress.getAttribute('data-value'),
                             progress.getAttribute('data-max')] : null,
        preview: preview ? (preview.getAttribute('src') || '') : null,
        error: !!el.querySelector('[data-testid=node-error]'),
      };
      const key = JSON.stringify(entry);
      if (last[id] !== key) {
        last[id] = key;
        log.push({...entry, t: Math.round(performance.now() - t0)});
      }
    }
  };
  const observer = new MutationObserver(snap);
  observer.observe(document.body, {subtree: true, childList: true, attributes: true,
    attributeFilter: ['data-state', 'data-value', 'data-max', 'src']});
  snap();
  window.__nfRecorder = observer;
  window.__nfLog = log;
}
"""


def start_recording(page: Any) -> None:
    page.evaluate(RECORDER_JS)


def recorded(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__nfLog || []")


def states_seen(log: list[dict[str, Any]], node_id: str) -> list[str]:
    seen: list[str] = []
    for entry in log:
        if entry["id"] == node_id and (not seen or seen[-1] != entry["state"]):
            seen.append(entry["state"])
    return seen


def drop_files(page: Any, files: list[tuple[str, str, bytes]], x: float = 700,
               y: float = 450) -> None:  # fmt: skip
    """Synthesise a drag-and-drop of files (name, MIME type, bytes) onto the page at (x, y)."""
    import base64

    payload = [(name, mime, base64.b64encode(data).decode()) for name, mime, data in files]
    page.evaluate(
        """([files, x, y]) => {
          const transfer = new DataTransfer();
          for (const [name, type, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, {type}));
          }
          const target = document.elementFromPoint(x, y) || document.body;
          for (const type of ['dragenter', 'dragover', 'drop']) {
            target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
              composed: true, clientX: x, clientY: y, dataTransfer: transfer}));
          }
        }""",
        [payload, x, y],
    )


def wait_for_server(
    process: Any, base: str, log_tail: Callable[[], str], timeout: float = 120
) -> None:
    """Until ``nodeflow serve`` (``process``) answers ``/api/system`` at ``base``; a server that
    exits or never answers fails the test with the end of its log."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"nodeflow serve exited with {process.returncode}:\n{log_tail()}",
                        pytrace=False)  # fmt: skip
        try:
            if http_json(base + "/api/system", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"nodeflow serve did not answer in {timeout:.0f} s:\n{log_tail()}",
                        pytrace=False)  # fmt: skip
        time.sleep(0.2)


def stop_server(process: Any) -> None:
    """Ctrl+C (the server's clean shutdown), then kill if it takes over 10 s."""
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
