"""The editor's routes: the bundle at / and /assets, example workflows under /api/workflows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from test_app import free_port

from nodeflow.server.editor import Editor


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    web_dir, workflows = tmp_path / "dist", tmp_path / "workflows"
    (web_dir / "assets").mkdir(parents=True)
    (web_dir / "index.html").write_text("<!doctype html><script src=/assets/app-1.js></script>")
    (web_dir / "assets" / "app-1.js").write_text("console.log(1)")
    (web_dir / "assets" / "notes.html").write_text("<script>alert(1)</script>")
    (tmp_path / "secret.js").write_text("secret")
    workflows.mkdir()
    (workflows / "a.json").write_text(json.dumps({"version": 1, "nodes": {}}))
    (workflows / "readme.txt").write_text("not a workflow")
    return web_dir, workflows


async def _serve(editor: Editor) -> tuple[web.AppRunner, str]:
    app = web.Application()
    editor.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _test_serves_the_bundle_with_a_strict_policy(folders) -> None:
    runner, base = await _serve(Editor(*folders))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as r:
                assert r.status == 200 and "text/html" in r.content_type
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            async with session.get(base + "/assets/app-1.js") as r:
                assert r.status == 200 and r.content_type == "text/javascript"
                assert await r.text() == "console.log(1)"
            async with session.get(base + "/assets/notes.html") as r:
                assert r.status == 404  # only asset types are served from the bundle
            async with session.get(base + "/assets/%2e%2e/%2e%2e/secret.js") as r:
                assert r.status in (403, 404)
    finally:
        await runner.cleanup()


async def _test_a_missing_bundle_says_how_to_build_it(tmp_path, folders) -> None:
    runner, base = await _serve(Editor(tmp_path / "nothing", folders[1]))
    try:
        async with aiohttp.ClientSession() as session, session.get(base + "/") as r:
            assert r.status == 503 and "npm --prefix web run build" in await r.text()
    finally:
        await runner.cleanup()


async def _test_lists_and_serves_example_workflows(folders) -> None:
    runner, base = await _serve(Editor(*folders))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/api/workflows") as r:
                assert await r.json() == {"workflows": ["a.json"]}
            async with session.get(base + "/api/workflows/a.json") as r:
                assert (await r.json())["version"] == 1
            async with session.get(base + "/api/workflows/readme.txt") as r:
                assert r.status == 404
            async with session.get(base + "/api/workflows/..%2Fdist%2Findex.html") as r:
                assert r.status in (403, 404)
    finally:
        await runner.cleanup()


def test_the_shipped_examples_are_found_by_default() -> None:
    editor = Editor(None, None)
    assert (editor.workflows_dir / "txt2img.json").is_file()


def test_serves_the_bundle_with_a_strict_policy(folders) -> None:
    asyncio.run(_test_serves_the_bundle_with_a_strict_policy(folders))


def test_a_missing_bundle_says_how_to_build_it(tmp_path, folders) -> None:
    asyncio.run(_test_a_missing_bundle_says_how_to_build_it(tmp_path, folders))


def test_lists_and_serves_example_workflows(folders) -> None:
    asyncio.run(_test_lists_and_serves_example_workflows(folders))
