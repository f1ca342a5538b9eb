"""The server end to end: a real aiohttp server on loopback, real HTTP and websocket clients."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testnodes
import testnodes

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog, load_catalog
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.store import RunStore

GOOD = {
    "version": 1,
    "nodes": {
        "c": {"type": "Constant", "inputs": {"value": 3}},
        "s": {"type": "Scale", "inputs": {"x": {"from": "c.integer"}, "factor": 2}},
        "o": {"type": "Show", "inputs": {"x": {"from": "s.number"}}},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A real server on loopback (the test nodes' catalog unless another is given)."""

    def __init__(self, tmp: Path, catalog: Catalog | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        if catalog is None:
            catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
        env = Environment.from_dirs(tmp / "models", tmp / "output", tmp / "input")
        self.env = env
        self.store = RunStore(tmp / "runs.sqlite3")
        self.server = Server(
            catalog, Executor(catalog, env=env), self.store, ServerConfig(port=self.port)
        )

    async def __aenter__(self) -> Running:
        self.runner = web.AppRunner(self.server.app())
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.session.close()
        await self.runner.cleanup()
        self.store.close()

    async def submit(self, workflow: dict, **extra: Any) -> tuple[int, dict]:
        async with self.session.post(
            f"{self.base}/api/runs", json={"workflow": workflow, **extra}
        ) as r:
            return r.status, await r.json()

    async def until_done(self, run_id: str, timeout: float = 20) -> dict:
        for _ in range(int(timeout / 0.02)):
            async with self.session.get(f"{self.base}/api/runs/{run_id}") as r:
                run = await r.json()
            if run["status"] not in ("queued", "running"):
                return run
            await asyncio.sleep(0.02)
        raise AssertionError(f"run {run_id} did not finish")


async def events_until_finished(ws: aiohttp.ClientWebSocketResponse, run_id: str) -> list[dict]:
    seen = []
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        data = message.json()
        if data.get("run_id") == run_id:
            seen.append(data)
            if data["type"] in ("run.finished", "run.failed", "run.cancelled"):
                return seen
    raise AssertionError("websocket closed early")


def test_submit_stream_events_and_rerun_from_cache(tmp_path):
    async def scenario():
        async with (
            Running(tmp_path) as srv,
            srv.session.ws_connect(f"{srv.base}/api/ws") as ws,
        ):
            status, body = await srv.submit(GOOD)
            assert status == 201 and body["position"] == 0
            events = await events_until_finished(ws, body["run_id"])
            assert [(e["type"], e.get("node")) for e in events] == [
                ("run.started", None),
                ("node.started", "c"),
                ("node.finished", "c"),
                ("node.started", "s"),
                ("node.finished", "s"),
                ("node.started", "o"),
                ("node.finished", "o"),
                ("run.finished", None),
            ]
            # read at once: the store is updated before run.finished goes out
            async with srv.session.get(f"{srv.base}/api/runs/{body['run_id']}") as r:
                run = await r.json()
            assert run["status"] == "finished" and run["outputs"]["o"]["value"] == 6.0

            changed = {
                **GOOD,
                "nodes": {
                    **GOOD["nodes"],
                    "s": {"type": "Scale", "inputs": {"x": {"from": "c.integer"}, "factor": 3}},
                },
            }
            _, again = await srv.submit(changed)
            events = await events_until_finished(ws, again["run_id"])
            assert [e["node"] for e in events if e["type"] == "node.cached"] == ["c"]
            assert [e["node"] for e in events if e["type"] == "node.started"] == ["s", "o"]

    asyncio.run(scenario())


def test_a_bad_workflow_gets_400_with_every_error_and_the_server_keeps_serving(tmp_path):
    bad = {
        "version": 1,
        "nodes": {
            "c": {"type": "Constant", "inputs": {"value": "x"}},
            "o": {"type": "Show", "inputs": {"x": {"from": "nope.integer"}}},
            "u": {"type": "Unknown"},
        },
    }

    async def scenario():
        async with Running(tmp_path) as srv:
            status, body = await srv.submit(bad)
            assert status == 400
            assert sorted((e["node"], e["code"]) for e in body["errors"]) == [
                ("c", "invalid_value"),
                ("o", "missing_node"),
                ("u", "unknown_node_type"),
            ]
            async with srv.session.post(f"{srv.base}/api/runs", data=b"{nope") as r:
                assert r.status == 400 and (await r.json())["errors"][0]["code"] == "json_syntax"
            assert srv.store.queue() == [] and srv.store.history() == []  # never queued
            status, body = await srv.submit(GOOD)
            assert status == 201
            assert (await srv.until_done(body["run_id"]))["status"] == "finished"

    asyncio.run(scenario())


def test_a_missing_file_gets_400_located_at_its_input_naming_the_folders(tmp_path):
    picks = {"version": 1, "nodes": {"f": {"type": "Files", "inputs": {"path": "n.txt"}}}}

    async def scenario():
        async with Running(tmp_path) as srv:
            status, body = await srv.submit(picks)
            assert status == 400
            (error,) = body["errors"]
            assert (error["node"], error["input"], error["code"]) == ("f", "path", "file_not_found")
            assert str(srv.env.input_dir) in error["message"]
            assert srv.store.queue() == [] and srv.store.history() == []  # never queued
            srv.env.input_dir.mkdir(parents=True)
            (srv.env.input_dir / "n.txt").write_text("1")
            status, body = await srv.submit(picks)
            assert status == 201
            assert (await srv.until_done(body["run_id"]))["status"] == "finished"

    asyncio.run(scenario())


def test_cancel_a_queued_run_and_interrupt_the_running_one(tmp_path):
    slow = {
        "version": 1,
        "nodes": {
            "c": {"type": "Constant"},
            "w": {
                "type": "Slow",
                "inputs": {"x": {"from": "c.integer"}, "steps": 500, "delay": 0.01},
            },
            "o": {"type": "Show", "inputs": {"x": {"from": "w.number"}}},
        },
    }

    async def scenario():
        async with Running(tmp_path) as srv:
            _, first = await srv.submit(slow)
            _, second = await srv.submit(GOOD)
            async with srv.session.post(f"{srv.base}/api/runs/{second['run_id']}/cancel") as r:
                assert r.status == 200 and (await r.json())["status"] == "cancelled"
            for _ in range(500):
                if srv.server.worker.current == first["run_id"]:
                    break
                await asyncio.sleep(0.01)
            async with srv.session.post(f"{srv.base}/api/interrupt") as r:
                assert (await r.json())["interrupted"] is True
            assert (await srv.until_done(first["run_id"]))["status"] == "cancelled"
            assert (await srv.until_done(second["run_id"]))["status"] == "cancelled"
            async with srv.session.post(f"{srv.base}/api/runs/{second['run_id']}/cancel") as r:
                assert r.status == 409

    asyncio.run(scenario())


def test_fifty_clients_submitting_two_hundred_runs_lose_none(tmp_path):
    async def scenario():
        async with Running(tmp_path) as srv:

            async def client(index: int) -> list[str]:
                ids = []
                for k in range(4):
                    workflow = {
                        **GOOD,
                        "nodes": {
                            **GOOD["nodes"],
                            "c": {"type": "Constant", "inputs": {"value": index * 4 + k}},
                        },
                    }
                    status, body = await srv.submit(workflow)
                    assert status == 201
                    ids.append(body["run_id"])
                return ids

            batches = await asyncio.gather(*(client(i) for i in range(50)))
            run_ids = [run_id for batch in batches for run_id in batch]
            assert len(set(run_ids)) == 200
            values = set()
            for run_id in run_ids:
                run = await srv.until_done(run_id, timeout=60)
                assert run["status"] == "finished"
                values.add(run["outputs"]["o"]["value"])
            assert values == {2.0 * v for v in range(200)}

    asyncio.run(scenario())


def test_files_are_served_safely_and_traversal_is_refused(tmp_path):
    async def scenario():
        async with Running(tmp_path) as srv:
            srv.env.output_dir.mkdir(parents=True)
            (srv.env.output_dir / "a.png").write_bytes(b"\x89PNG fake")
            (tmp_path / "secret.txt").write_text("secret")
            (srv.env.output_dir / "page.html").write_text("<script>alert(1)</script>")
            async with srv.session.get(f"{srv.base}/api/files/output/a.png") as r:
                assert r.status == 200 and r.content_type == "image/png"
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with srv.session.get(f"{srv.base}/api/files/output/page.html") as r:
                assert r.status == 200 and r.content_type == "application/octet-stream"
            (srv.env.output_dir / "link.txt").symlink_to(tmp_path / "secret.txt")
            for path in [
                "../secret.txt",
                "%2e%2e/secret.txt",
                "..%2fsecret.txt",
                "/" + str(tmp_path / "secret.txt"),
                "%2F" + str(tmp_path / "secret.txt").lstrip("/"),
                "link.txt",
            ]:
                url = f"{srv.base}/api/files/output/{path}"
                async with srv.session.get(yarl_url(url)) as r:
                    assert r.status in (403, 404), path
                    assert "secret" not in await r.text()

    asyncio.run(scenario())


def yarl_url(url: str) -> Any:
    import yarl

    return yarl.URL(url, encoded=True)  # send the path exactly as written


def test_cross_origin_requests_are_refused(tmp_path):
    async def scenario():
        async with Running(tmp_path) as srv:
            for origin in ["http://evil.example", "null"]:
                async with srv.session.post(
                    f"{srv.base}/api/runs", json={"workflow": GOOD}, headers={"Origin": origin}
                ) as r:
                    assert r.status == 403
            async with srv.session.get(
                f"{srv.base}/api/nodes", headers={"Host": f"evil.example:{srv.port}"}
            ) as r:
                assert r.status == 403
            assert srv.store.history() == []
            async with srv.session.get(f"{srv.base}/api/nodes") as r:
                assert r.status == 200 and "Scale" in await r.json()

    asyncio.run(scenario())


def test_uploads_models_types_and_system(tmp_path):
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(picture, "PNG")

    async def upload(srv: Running, data: bytes, name: str) -> aiohttp.ClientResponse:
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="image/png")
        return await srv.session.post(f"{srv.base}/api/uploads", data=form)

    async def scenario():
        async with Running(tmp_path) as srv:
            response = await upload(srv, picture.getvalue(), "../../red dot.png")
            assert response.status == 201
            name = (await response.json())["name"]
            assert name == "red_dot.png" and (srv.env.input_dir / name).is_file()
            async with srv.session.get(f"{srv.base}/api/files/input/{name}") as r:
                assert r.status == 200 and await r.read() == picture.getvalue()
            again = await upload(srv, picture.getvalue(), "red dot.png")
            assert (await again.json())["name"] == "red_dot_1.png"
            svg = await upload(srv, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.png")
            assert svg.status == 415
            srv.server.config.max_upload_bytes = 10
            big = await upload(srv, picture.getvalue(), "big.png")
            assert big.status == 413
            assert sorted(p.name for p in srv.env.input_dir.iterdir()) == [
                "red_dot.png",
                "red_dot_1.png",
            ]

            (srv.env.models_dir / "checkpoints" / "sd15").mkdir(parents=True)
            (srv.env.models_dir / "checkpoints" / "x.safetensors").write_bytes(b"")
            (srv.env.models_dir / "checkpoints" / "notes.txt").write_text("")
            async with srv.session.get(f"{srv.base}/api/models/checkpoints") as r:
                assert (await r.json())["models"] == ["sd15", "x.safetensors"]
            async with srv.session.get(f"{srv.base}/api/types") as r:
                assert (await r.json())["Number"]["color"] == "#2196f3"
            async with srv.session.get(f"{srv.base}/api/system") as r:
                system = await r.json()
                assert system["plugins"][0]["name"] == "testnodes"
                assert system["versions"]["nodeflow"]

    asyncio.run(scenario())
