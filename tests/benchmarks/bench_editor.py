"""Editor frame times: a 500-node graph panned and zoomed in headless Chromium.

Run from the repository root (needs the built editor, ``web/dist``, and Chromium with the
``playwright`` package, as for ``tests/web``)::

    python tests/benchmarks/bench_editor.py [--chains 50] [--length 10] [--subgraphs 10]
        [--reroutes 50] [--seconds 3] [--no-write]

A ``nodeflow serve`` subprocess (no models needed: nothing is run) serves the editor; Chromium
(``/usr/bin/chromium``, headless, 1400x900, the flags of tests/web) opens it and
``window.nodeflow.loadWorkflow`` loads a generated graph: ``--chains`` chains of ``--length``
nodes, each LoadCheckpoint -> LoadLoRA x (length - 2) -> TextEncode, linked through both of
LoadLoRA's sockets (so about 1.8 links per node), laid out on a grid. In the first
``--subgraphs`` chains three LoadLoRA nodes are one instance of a subgraph (``LoraStack``, defined
once in the workflow) and the chain is three nodes longer, so every chain keeps ``--length`` nodes
on the canvas; the first ``--reroutes`` chains' last link passes through a reroute point. Then,
each phase for
``--seconds`` seconds with real input events (Playwright's mouse, i.e. CDP Input events, one
every ~16 ms; a call returns once the page has taken the event):

* ``idle``: no input (what the page costs at rest);
* ``pan, whole graph``: after fit view (every node on screen), drag the empty pane back and forth;
* ``zoom, wheel``: from fit view, wheel steps at the canvas centre, 10 in, 10 out, and so on;
* ``pan, zoom 1``: at zoom 1 (a working view: a dozen nodes on screen), drag the pane around.

Frame times are the intervals between consecutive ``requestAnimationFrame`` callbacks in the
page during a phase (a missed vsync shows up as a 33 ms interval). Reported: median, p95, max,
and the fraction of intervals over 16.7 ms and over 33.4 ms. Headless Chromium here renders in
software (``--disable-gpu``: raster and compositing on the CPU), so on a 2-core machine this is a
worst case, and compositor work competes with the page's main thread and with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "web"))
from report import machine_summary, utc_date, write_section  # noqa: E402
from webharness import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    DIST,
    VIEWPORT,
    free_port,
    http_json,
)

SECTION = "## Editor frame times (tests/benchmarks/bench_editor.py)"

FRAMES_JS = """
() => {
  window.__bench = {frames: [], on: false, last: null, zooms: []};
  const tick = (t) => {
    const b = window.__bench;
    if (b.on) {
      if (b.last !== null) b.frames.push(t - b.last);
      b.last = t;
      // React Flow's viewport transform is inline style: reading it costs no layout
      const v = document.querySelector('.react-flow__viewport');
      const m = v && /scale\\(([^)]+)\\)/.exec(v.style.transform);
      if (m) b.zooms.push(parseFloat(m[1]));
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}
"""


def lora(source: str, j: int) -> dict[str, Any]:
    return {
        "type": "LoadLoRA",
        "inputs": {
            "unet": {"from": f"{source}.unet"},
            "text_encoder": {"from": f"{source}.text_encoder"},
            "path": "demo-style",
            "strength_unet": round(0.5 + 0.01 * j, 2),
            "strength_text_encoder": 1.0,
        },
    }


# three LoRAs in a row, behind the declared inputs and outputs of a subgraph
LORA_STACK = {
    "inputs": {"unet": {"type": "UNet"}, "text_encoder": {"type": "TextEncoder"}},
    "outputs": {
        "unet": {"from": "l3.unet", "type": "UNet"},
        "text_encoder": {"from": "l3.text_encoder", "type": "TextEncoder"},
    },
    "nodes": {"l1": lora("inputs", 1), "l2": lora("l1", 2), "l3": lora("l2", 3)},
    "ui": {"nodes": {"l1": {"pos": [0, 0]}, "l2": {"pos": [320, 0]}, "l3": {"pos": [640, 0]}}},
}


def make_workflow(
    chains: int, length: int, subgraphs: int = 0, reroutes: int = 0
) -> dict[str, Any]:
    """``chains`` chains of ``length`` canvas nodes; see the module docstring."""
    nodes: dict[str, Any] = {}
    ui: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for c in range(chains):
        row = f"c{c}"
        block, line = c % 2, c // 2  # two columns of chains: a graph about as wide as tall
        chain = [f"{row}n0"]
        nodes[chain[0]] = {"type": "LoadCheckpoint", "inputs": {"path": "demo"}}
        if c < subgraphs:
            instance = f"{row}s"
            nodes[instance] = {
                "type": "LoraStack",
                "inputs": {
                    "unet": {"from": f"{chain[0]}.unet"},
                    "text_encoder": {"from": f"{chain[0]}.text_encoder"},
                },
            }
            chain.append(instance)
        for j in range(len(chain), length - 1):
            nodes[f"{row}n{j}"] = lora(chain[-1], j)
            chain.append(f"{row}n{j}")
        text = f"{row}n{length - 1}"
        nodes[text] = {
            "type": "TextEncode",
            "inputs": {"text_encoder": {"from": f"{chain[-1]}.text_encoder"}, "text": f"chain {c}"},
        }
        chain.append(text)
        for j, node_id in enumerate(chain):
            ui[node_id] = {"pos": [block * (length * 320 + 400) + j * 320, line * 300]}
        if c < reroutes:  # the last link dips below the chain and comes back
            x = block * (length * 320 + 400) + (length - 1.5) * 320
            points[f"{text}.text_encoder"] = [[round(x), line * 300 + 220]]
    workflow: dict[str, Any] = {"version": 1, "nodes": nodes, "ui": {"nodes": ui}}
    if subgraphs:
        workflow["subgraphs"] = {"LoraStack": LORA_STACK}
    if points:
        workflow["ui"]["reroutes"] = points
    return workflow


def count_links(workflow: dict[str, Any]) -> int:
    return sum(
        isinstance(v, dict) and "from" in v
        for n in workflow["nodes"].values()
        for v in n["inputs"].values()
    )


def stats(frames: list[float]) -> dict[str, float]:
    ordered = sorted(frames)
    n = len(ordered)
    return {
        "frames": n,
        "median": statistics.median(ordered),
        "p95": ordered[min(n - 1, round(0.95 * (n - 1)))],
        "max": ordered[-1],
        # rAF intervals come in multiples of the 16.7 ms vsync (16.7, 33.3, 50, ...): "over
        # 16.7 ms" is at least one missed vsync, "over 33 ms" at least two
        "over16": sum(f > 16.7 * 1.5 for f in ordered) / n,
        "over33": sum(f > 16.7 * 2.5 for f in ordered) / n,
    }


class Bench:
    def __init__(self, page: Any, seconds: float) -> None:
        self.page = page
        self.seconds = seconds
        canvas = page.locator("[data-testid=canvas]").bounding_box()
        self.canvas = canvas
        self.cx = canvas["x"] + canvas["width"] / 2
        self.cy = canvas["y"] + canvas["height"] / 2

    def zoom(self) -> float:
        return self.page.evaluate(
            "() => { const v = document.querySelector('.react-flow__viewport');"
            " return new DOMMatrix(getComputedStyle(v).transform).a; }"
        )

    def rendered(self) -> int:
        return self.page.locator(".react-flow__node").count()

    def measure(self, name: str, action) -> dict[str, Any]:
        page = self.page
        page.evaluate("() => { window.__bench.frames = []; window.__bench.zooms = [];"
                      " window.__bench.last = null; window.__bench.on = true; }")  # fmt: skip
        start = time.monotonic()
        events = action()
        elapsed = time.monotonic() - start
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
        frames, zooms = page.evaluate(
            "() => { const b = window.__bench; b.on = false; return [b.frames, b.zooms]; }"
        )
        result = {
            "phase": name,
            "seconds": elapsed,
            "events": events,
            "zoom": (min(zooms), max(zooms)) if zooms else (self.zoom(), self.zoom()),
            "rendered": self.rendered(),
            **stats(frames),
        }
        print(json.dumps(result))
        return result

    def paced(self, step) -> int:
        """Call ``step(i)`` every ~16 ms for the phase's duration; the number of calls."""
        deadline = time.monotonic() + self.seconds
        i = 0
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            step(i)
            i += 1
            next_at += 1 / 60
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return i

    def idle(self) -> int:
        time.sleep(self.seconds)
        return 0

    def pan(self) -> int:
        mouse = self.page.mouse
        x, y = self.free_point()
        mouse.move(x, y)
        mouse.down()
        span = 240.0

        def step(i: int) -> None:
            # a back-and-forth sweep, 60 moves one way
            phase = (i % 120) / 60
            offset = span * (phase if phase <= 1 else 2 - phase)
            mouse.move(x + offset, y + offset * 0.4)

        count = self.paced(step)
        mouse.up()
        return count

    def wheel(self) -> int:
        mouse = self.page.mouse
        mouse.move(self.cx, self.cy)

        def step(i: int) -> None:
            # 10 steps in, 10 steps out (from the fit-view zoom: in first)
            mouse.wheel(0, -120 if (i // 10) % 2 == 0 else 120)

        return self.paced(step)

    def free_point(self) -> tuple[float, float]:
        """A point on the empty pane (dragging a node would move it, not pan)."""
        found = self.page.evaluate(
            """([x0, y0, w, h]) => {
              for (let y = y0 + 30; y < y0 + h - 30; y += 15)
                for (let x = x0 + 30; x < x0 + w - 300; x += 15) {
                  const e = document.elementFromPoint(x, y);
                  if (e && e.classList.contains('react-flow__pane')) return [x, y];
                }
              return null;
            }""",
            [self.canvas["x"], self.canvas["y"], self.canvas["width"], self.canvas["height"]],
        )
        assert found, "no empty pane to drag"
        return found[0], found[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NODEFLOW_HOME": str(root / "home")}
    command = [
        sys.executable, "-m", "nodeflow", "serve", "--port", str(port), "--device", "cpu",
        "--models-dir", str(root / "models"), "--output-dir", str(root / "output"),
        "--input-dir", str(root / "input"), "--db", str(root / "runs.sqlite3"),
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"nodeflow serve exited:\n{(root / 'server.log').read_text()}")
        try:
            if http_json(base + "/api/system", timeout=2)[0] == 200:
                return process, base
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("nodeflow serve did not answer in 60 s")


def fmt_ms(value: float) -> str:
    return f"{value:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--subgraphs", type=int, default=10, help="chains with a subgraph")
    parser.add_argument("--reroutes", type=int, default=50, help="chains with a reroute point")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--screenshots", type=Path, help="save a screenshot after each phase here")
    args = parser.parse_args()
    if not (DIST / "index.html").is_file():
        raise SystemExit(f"{DIST / 'index.html'} is missing: build the editor first")
    from playwright.sync_api import sync_playwright

    workflow = make_workflow(args.chains, args.length, args.subgraphs, args.reroutes)
    node_count, link_count = len(workflow["nodes"]), count_links(workflow)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-editor-") as tmp:
        process, base = start_server(Path(tmp))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                     args=CHROMIUM_ARGS)  # fmt: skip
                version = browser.version
                page = browser.new_page(viewport=VIEWPORT, base_url=base)
                page.goto("/")
                page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
                page.evaluate(FRAMES_JS)
                start = time.monotonic()
                page.evaluate("async (w) => { await window.nodeflow.loadWorkflow(w); }", workflow)
                page.wait_for_function(
                    "() => document.querySelectorAll('.react-flow__node').length > 0"
                )
                page.evaluate("() => new Promise((r) => requestAnimationFrame(() =>"
                              " requestAnimationFrame(() => r())))")  # fmt: skip
                load_s = time.monotonic() - start
                page.locator("[data-testid=fit-view]").click()
                time.sleep(0.5)
                bench = Bench(page, args.seconds)

                def shoot(name: str) -> None:
                    if args.screenshots:
                        args.screenshots.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(args.screenshots / f"{name}.png"))

                results.append(bench.measure("idle (whole graph in view)", bench.idle))
                shoot("idle")
                results.append(bench.measure("pan, whole graph in view", bench.pan))
                shoot("pan-all")
                page.locator("[data-testid=fit-view]").click()
                time.sleep(0.3)
                results.append(bench.measure("zoom, mouse wheel", bench.wheel))
                shoot("zoom")
                # a working view: wheel in at the centre until zoom ~1
                wheel_to(page, bench, 1.0)
                results.append(bench.measure("pan, zoom 1", bench.pan))
                shoot("pan-zoom1")
                results.append(bench.measure("idle (zoom 1)", bench.idle))
                browser.close()
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    from importlib.metadata import version as package_version

    playwright_version = package_version("playwright")
    rows = [
        "| phase | input events | zoom (lowest – highest) | nodes in the DOM | frames | median "
        "| p95 | max | > 16.7 ms | > 33 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['phase']} | {r['events']} | {r['zoom'][0]:.2f} – {r['zoom'][1]:.2f} "
            f"| {r['rendered']} | {r['frames']} | {fmt_ms(r['median'])} | {fmt_ms(r['p95'])} "
            f"| {fmt_ms(r['max'])} | {100 * r['over16']:.0f}% | {100 * r['over33']:.0f}% |"
        )
    table = "\n".join(rows)
    print(table)
    print(f"load: {load_s:.2f} s for {node_count} nodes, {link_count} links")
    if args.no_write:
        return 0
    command = "python tests/benchmarks/bench_editor.py"
    extra = [a for a in sys.argv[1:] if a != "--no-write"]
    if extra:
        command += " " + " ".join(extra)
    method = (
        "`nodeflow serve` in a subprocess serving the built editor; headless Chromium, 1400x900, "
        "`--disable-gpu` (it rasterises and composites on the CPU). The graph: "
        f"{node_count} nodes and {link_count} links ({args.chains} chains of LoadCheckpoint → "
        f"{args.length - 2} × LoadLoRA → TextEncode, linked through both LoRA sockets, in two "
        f"columns of chains on a 320 × 300 grid; in {min(args.subgraphs, args.chains)} chains "
        "three of the LoRAs are one instance of a subgraph defined in the workflow, and "
        f"{min(args.reroutes, args.chains)} chains' last link passes through a reroute point), "
        "loaded with `window.nodeflow.loadWorkflow` "
        f"(to the first painted frame: {load_s:.2f} s), then fit view. Each phase lasts "
        f"{args.seconds:g} s of real input events (Playwright's mouse, one every ~16 ms; each "
        "returns once the page has taken it, so a slow page gets fewer): pane drags back and "
        "forth (240 px each way) for the pans; wheel notches (±120) at the canvas centre, 10 in "
        "then 10 out, for the zoom. Frame times are the intervals between consecutive "
        "`requestAnimationFrame` callbacks in the page during the phase; they come in multiples "
        'of the 16.7 ms vsync, so "> 16.7 ms" counts intervals of one or more missed vsyncs '
        '(≥ 33.3 ms) and "> 33 ms" of two or more (≥ 50 ms).'
    )
    caveat = (
        "software rendering on a shared 2-core CPU (the page's main thread, the compositor, "
        "raster threads, the server and the benchmark's own process compete for it); not "
        "measured with GPU compositing. Above 150 nodes the editor renders only the visible "
        "ones (`onlyRenderVisibleElements`), hence the DOM counts at zoom 1."
    )
    machine = machine_summary(f"Chromium {version} (headless, software rendering)",
                              f"playwright {playwright_version}")  # fmt: skip
    text = (
        f"{SECTION}\n\n- Date: {utc_date()}\n- Machine: {machine}\n- Command: `{command}`\n"
        f"- Method: {method}\n- Caveat: {caveat}\n\n{table}\n"
    )
    write_section(REPO / "BENCHMARKS.md", SECTION, text)
    print(f"wrote {SECTION!r} to BENCHMARKS.md")
    return 0


def wheel_to(page: Any, bench: Bench, target: float) -> None:
    """Wheel at the canvas centre until the zoom is within 10% of ``target``."""
    page.mouse.move(bench.cx, bench.cy)
    for _ in range(200):
        zoom = bench.zoom()
        if abs(zoom - target) / target < 0.1:
            return
        page.mouse.wheel(0, -40 if zoom < target else 40)
        time.sleep(0.02)
    raise AssertionError(f"could not wheel to zoom {target} (at {bench.zoom():.2f})")


if __name__ == "__main__":
    sys.exit(main())
