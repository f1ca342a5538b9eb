"""The diffusion pack through the server: pictures fetched over HTTP, previews as binary frames."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import aiohttp
from aiohttp import web
from PIL import Image
from sdgraphs import sd_graph

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.hub import decode_preview_frame
from nodeflow.server.store import RunStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def collect(ws: aiohttp.ClientWebSocketResponse, run_id: str) -> tuple[list[dict], list]:
    """JSON messages (of this run, and queue changes) and binary frames, until the run ends."""
    messages, frames = [], []
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            frames.append(decode_preview_frame(message.data))
            continue
        data = message.json()
        if data.get("run_id") == run_id or data["type"] == "queue":
            messages.append(data)
        if (
            data.get("run_id") == run_id
            and data["type"].startswith("run.")
            and data["type"] != "run.started"
        ):
            return messages, frames
    raise AssertionError("websocket closed early")


def test_txt2img_through_the_server(sd_catalog, runtime, models_dir, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = Environment.from_dirs(models_dir, tmp_path / "out", tmp_path / "in")
    store = RunStore(tmp_path / "runs.sqlite3")
    server = Server(
        sd_catalog, Executor(sd_catalog, env=env, runtime=runtime), store, ServerConfig(port=port)
    )
    first = sd_graph(steps=6, seed=1).to_json()
    second = sd_graph(steps=6, seed=2).to_json()

    async def scenario():
        runner = web.AppRunner(server.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"{base}/api/ws") as ws,
            ):
                async with session.post(f"{base}/api/runs", json={"workflow": first}) as r:
                    assert r.status == 201
                    run_id = (await r.json())["run_id"]
                messages, frames = await collect(ws, run_id)
                assert messages[-1]["type"] == "run.finished"
                assert any(m["type"] == "queue" and m["running"] == run_id for m in messages)
                progress = [m["value"] for m in messages if m["type"] == "node.progress"]
                assert progress == [1, 2, 3, 4, 5, 6]
                assert frames, "no preview frame arrived"
                header, data = frames[0]
                assert (header["run_id"], header["node"]) == (run_id, "denoise")
                with Image.open(io.BytesIO(data)) as preview:
                    assert preview.size == (32, 32)  # latent resolution of a 64x64 picture

                async with session.get(f"{base}/api/runs/{run_id}") as r:
                    run = await r.json()
                picture = run["outputs"]["save"]["images"][0]
                path = "/".join(
                    p for p in (picture["subfolder"], picture["filename"]) if p not in ("", ".")
                )
                async with session.get(f"{base}/api/files/output/{path}") as r:
                    assert r.status == 200 and r.content_type == "image/png"
                    with Image.open(io.BytesIO(await r.read())) as png:
                        assert png.size == (64, 64)
                        assert json.loads(png.text["workflow"]) == first

                async with session.post(f"{base}/api/runs", json={"workflow": second}) as r:
                    rerun = (await r.json())["run_id"]
                messages, _ = await collect(ws, rerun)
                cached = [m["node"] for m in messages if m["type"] == "node.cached"]
                started = [m["node"] for m in messages if m["type"] == "node.started"]
                assert sorted(cached) == ["cfg", "empty", "model", "neg", "pos", "sched"]
                assert started == ["denoise", "decode", "save"]
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())


def test_model_lists_offer_the_built_in_names_on_an_empty_models_folder(
    sd_catalog, runtime, tmp_path
):
    """The editor's checkpoint and LoRA choices come from /api/models: the demo models must be
    there before the user has any file, and a user's file of the same name is listed once."""
    port = free_port()
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "demo-style").write_bytes(b"")  # no suffix: not listed
    (tmp_path / "models" / "loras" / "mine.safetensors").write_bytes(b"")
    store = RunStore(tmp_path / "runs.sqlite3")
    server = Server(
        sd_catalog, Executor(sd_catalog, env=env, runtime=runtime), store, ServerConfig(port=port)
    )

    async def scenario() -> tuple[dict, dict]:
        runner = web.AppRunner(server.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{port}/api/models"
                async with session.get(f"{base}/checkpoints") as r:
                    checkpoints = await r.json()
                async with session.get(f"{base}/loras") as r:
                    loras = await r.json()
            return checkpoints, loras
        finally:
            await runner.cleanup()
            store.close()

    checkpoints, loras = asyncio.run(scenario())
    assert {"demo", "demo.safetensors", "demo-sdxl"} <= set(checkpoints["models"])
    assert "trained" in checkpoints["built_in"]["demo"]
    assert loras["models"] == ["mine.safetensors", "demo-style", "demo-lcm"]
