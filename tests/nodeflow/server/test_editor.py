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


def test_the_example_list_names_the_random_test_models_each_example_uses(tmp_path) -> None:
    import dataclasses
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testnodes
    import testnodes

    from nodeflow.context import Environment
    from nodeflow.plugins import load_catalog

    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    kinds = catalog.loaders.file_kinds
    built_in = {"noisy": "random tiny test model: draws noise", "zero": "the number 0, built in"}
    kinds["input"] = dataclasses.replace(kinds["input"], built_in=built_in)
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    for name, path in [("noisy", "noisy"), ("plain", "zero"), ("shadowed", "shadow")]:
        nodes = {"f": {"type": "Files", "inputs": {"path": path, "path_2": "noisy"}}}
        if name != "noisy":
            nodes["f"]["inputs"].pop("path_2")
        (workflows / f"{name}.json").write_text(json.dumps({"version": 1, "nodes": nodes}))
    (workflows / "broken.json").write_text("{")
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "output", tmp_path / "input")

    async def scenario() -> dict:
        runner, base = await _serve(Editor(tmp_path / "dist", workflows, catalog, env))
        try:
            async with aiohttp.ClientSession() as s, s.get(base + "/api/workflows") as r:
                return await r.json()
        finally:
            await runner.cleanup()

    answer = asyncio.run(scenario())
    assert answer["workflows"] == ["broken.json", "noisy.json", "plain.json", "shadowed.json"]
    assert {e["name"]: e["test_models"] for e in answer["examples"]} == {
        "broken.json": {},
        "noisy.json": {"noisy": "random tiny test model: draws noise"},
        "plain.json": {},
        "shadowed.json": {},
    }
    # a file named like the built-in model wins over it, as the nodes resolve it
    env.input_dir.mkdir(parents=True)
    (env.input_dir / "noisy").write_bytes(b"a real file")
    assert asyncio.run(scenario())["examples"][1]["test_models"] == {}
