"""The diffusion pack on two Ray worker actors behind the server: pictures come back through Ray,
previews and progress reach the websocket, and a seed-only resubmission goes to the worker that
holds the cache, where only denoise, decode and save run.

Ray is optional: without it this skips, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from sdgraphs import sd_graph
from test_server import collect, free_port

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import load_catalog
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.store import RunStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ray_instance():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            raise
        pytest.skip('ray is not installed (pip install "nodeflow[ray]")')
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "NODEFLOW_HOME": os.environ["NODEFLOW_HOME"], "HF_HUB_OFFLINE": "1"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {**env, "OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


def test_txt2img_on_two_ray_workers_with_affinity(ray_instance, sd_catalog, models_dir, tmp_path):
    from nodeflow.server.ray_pool import PoolConfig, RayPool

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = Environment.from_dirs(models_dir, tmp_path / "out", tmp_path / "in")
    store = RunStore(tmp_path / "runs.sqlite3")
    config = PoolConfig(catalog_factory=functools.partial(load_catalog), workers=2, device="cpu")
    server = Server(
        sd_catalog,
        Executor(sd_catalog, env=env),
        store,
        ServerConfig(port=port),
        workers=functools.partial(RayPool, config=config),
    )
    pool = server.worker
    first = sd_graph(steps=6, seed=1).to_json()
    second = sd_graph(steps=6, seed=2).to_json()

    async def scenario() -> None:
        runner = web.AppRunner(server.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"{base}/api/ws") as ws,
            ):
                async with session.post(f"{base}/api/runs", json={"workflow": first}) as r:
                    run_id = (await r.json())["run_id"]
                messages, frames = await asyncio.wait_for(collect(ws, run_id), 180)
                assert messages[-1]["type"] == "run.finished", messages[-1]
                progress = [m["value"] for m in messages if m["type"] == "node.progress"]
                assert progress == [1, 2, 3, 4, 5, 6]
                assert frames and frames[0][0]["node"] == "denoise"  # previews through Ray
                async with session.get(f"{base}/api/runs/{run_id}") as r:
                    url = (await r.json())["outputs"]["save"]["images"][0]["url"]
                async with session.get(f"{base}{url}") as r:
                    assert r.status == 200
                    with Image.open(io.BytesIO(await r.read())) as png:
                        assert png.size == (64, 64)

                async with session.post(f"{base}/api/runs", json={"workflow": second}) as r:
                    rerun = (await r.json())["run_id"]
                messages, _ = await asyncio.wait_for(collect(ws, rerun), 180)
                started = [m["node"] for m in messages if m["type"] == "node.started"]
                assert started == ["denoise", "decode", "save"]
                assert pool.assigned[rerun] == pool.assigned[run_id]
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2
