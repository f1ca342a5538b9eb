"""The browser editor end to end: a real ``nodeflow serve`` and a headless Chromium.

One server (a subprocess, tiny models in a temporary models dir) and one browser per session; a
fresh browser context (own localStorage) and page per test, 1400x900. Each test's screenshots are
kept as test artifacts under the test's temporary directory (``<tmp_path>/screenshots``), with a
``failure.png`` and the page's console log when it fails.

Without Chromium (``/usr/bin/chromium``, or ``NODEFLOW_TEST_CHROMIUM``), Playwright, or a built
bundle (``web/dist/index.html``) the browser tests are skipped, with the reason, except in CI
(``CI=true``), where a missing piece is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webharness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EMPTY_CANVAS,
    IN_CI,
    VIEWPORT,
    Shots,
    free_port,
    http_json,
    missing_requirement,
    stop_server,
    wait_for_server,
)


def require_browser() -> None:
    reason = missing_requirement()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass
class NodeflowServer:
    base: str
    port: int
    root: Path
    models: Path
    output: Path
    input: Path
    log: Path
    process: subprocess.Popen

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str) -> Any:
        status, body = http_json(self.url(path))
        assert status == 200, (path, status, body)
        return body

    def submit(self, workflow: dict[str, Any]) -> str:
        status, body = http_json(self.url("/api/runs"), {"workflow": workflow})
        assert status == 201, body
        return body["run_id"]

    def wait_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/runs/{run_id}")
            if run["status"] not in ("queued", "running"):
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not finish in {timeout} s")

    def runs(self) -> list[dict[str, Any]]:
        return self.get("/api/runs")["runs"]

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def nodeflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeflowServer]:
    """``nodeflow serve`` on a free loopback port, with a tiny SD model and tiny LoRAs.

    ``models/checkpoints/tiny`` is a tiny SD 1.x model, ``models/loras/*.safetensors`` LoRAs for
    it; ``path: "demo"`` / ``"demo-style"`` (the example workflows) are made by the server in its
    own NODEFLOW_HOME.
    """
    require_browser()
    root = tmp_path_factory.mktemp("web-server")
    models, output, inputs, home = (root / n for n in ("models", "output", "input", "home"))
    for folder in (models, output, inputs, home):
        folder.mkdir()
    port = free_port()
    log = root / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "NODEFLOW_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "nodeflow", "serve", "--port", str(port), "--device", "cpu",
        "--models-dir", str(models), "--output-dir", str(output), "--input-dir", str(inputs),
        "--db", str(root / "runs.sqlite3"),
    ]  # fmt: skip
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    server = NodeflowServer(f"http://127.0.0.1:{port}", port, root, models, output, inputs, log,
                            process)  # fmt: skip
    try:
        # the models are made here while the server imports torch
        from nodes.tiny import make_tiny_sd
        from nodes.tiny_lora import write_tiny_loras

        tiny = make_tiny_sd(models / "checkpoints" / "tiny", seed=0)
        write_tiny_loras(tiny, models / "loras")
        wait_for_server(process, server.base, server.log_tail)
        yield server
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps an asyncio
    event loop running in this thread while it is open, and tests collected after the browser
    tests (the plugins' own) call ``asyncio.run``, which refuses to run inside a running loop."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def first_visit() -> None:
    """Asked for by a test that wants the editor as a first visit shows it (the default graph)."""


@pytest.fixture
def page(
    browser: Any, nodeflow_server: NodeflowServer, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    """A fresh context (empty localStorage) and page on the server; dialogs are accepted."""
    context = browser.new_context(viewport=VIEWPORT, base_url=nodeflow_server.base,
                                  accept_downloads=True)  # fmt: skip
    context.set_default_timeout(15_000)
    if "first_visit" not in request.fixturenames:
        # every test but the first-visit ones starts from an empty canvas, not the default graph
        context.add_init_script(EMPTY_CANVAS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    page.on("dialog", lambda d: d.accept())
    page.console_log = console
    page.shots = Shots(page, tmp_path / "screenshots")
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            page.shots("failure")
            (tmp_path / "console.log").write_text("\n".join(console) + "\n")
            (tmp_path / "server.log").write_text(nodeflow_server.log_tail(200) + "\n")
            print(f"\nscreenshots and logs of the failure: {tmp_path}")
            print("browser console (last 30):\n" + "\n".join(console[-30:]))
        context.close()


@pytest.fixture
def shot(page: Any) -> Shots:
    """``shot("name")`` saves a numbered screenshot under ``<tmp_path>/screenshots``."""
    return page.shots
