"""A client written for ComfyUI's API runs unchanged against nodeflow's server, over a real
websocket: queue with /prompt, wait for ``executing`` with ``node: null``, read /history, fetch
/view; and the rest of ComfyUI's routes answer in ComfyUI's shapes."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import comfy_client
import pytest
from aiohttp import web
from PIL import Image

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.store import RunStore

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Background:
    """The server on its own event loop thread, so the blocking client runs as a script does."""

    def __init__(self, server: Server, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(server.app())
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        self.loop.run_until_complete(site.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served(sd_catalog, runtime, comfy_dirs, tmp_path):
    port = free_port()
    env = Environment.from_dirs(comfy_dirs["models"], tmp_path / "out", comfy_dirs["input"])
    store = RunStore(tmp_path / "runs.sqlite3")
    executor = Executor(sd_catalog, env=env, runtime=runtime)
    background = Background(Server(sd_catalog, executor, store, ServerConfig(port=port)), port)
    comfy_client.server_address = f"127.0.0.1:{port}"
    yield f"127.0.0.1:{port}"
    background.stop()
    store.close()


def get(address: str, path: str) -> object:
    with urllib.request.urlopen(f"http://{address}{path}") as response:
        return json.loads(response.read())


def post(address: str, path: str, body: object, headers: dict | None = None):
    request = urllib.request.Request(
        f"http://{address}{path}", data=json.dumps(body).encode(), headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_comfyui_websocket_example_runs_unchanged(served):
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["6"]["inputs"]["text"] = "masterpiece best quality man"  # as the example edits it
    prompt["3"]["inputs"]["seed"] = 5
    ws = comfy_client.WebSocket()
    ws.connect(f"ws://{served}/ws?clientId={comfy_client.client_id}")
    greeting = json.loads(ws.recv())
    assert greeting["type"] == "status" and greeting["data"]["sid"] == comfy_client.client_id
    seen: list = []
    images = comfy_client.get_images(ws, prompt, seen)
    ws.close()

    assert list(images) == ["9"]
    with Image.open(io.BytesIO(images["9"][0])) as picture:
        assert picture.size == (64, 64)
    texts = [m for m in seen if isinstance(m, dict)]
    kinds = [m["type"] for m in texts]
    assert kinds.index("execution_start") < kinds.index("executing") < kinds.index("executed")
    assert kinds[-2:] == ["execution_success", "executing"]
    executing = [m["data"]["node"] for m in texts if m["type"] == "executing"]
    # one message per ComfyUI node: KSampler's Scheduler, CFG and Denoise report as "3"
    assert executing.count("3") == 1 and executing[-1] is None
    assert {"4", "6", "7", "5", "8", "9"} <= set(executing)
    progress = [m["data"] for m in texts if m["type"] == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3] and {p["node"] for p in progress} == {"3"}
    executed = next(m["data"] for m in texts if m["type"] == "executed")
    assert executed["node"] == "9" and executed["output"]["images"][0]["type"] == "output"
    frames = [m for m in seen if isinstance(m, bytes)]
    assert frames and struct.unpack(">II", frames[0][:8]) == (1, 1)
    with Image.open(io.BytesIO(frames[0][8:])) as preview:
        assert preview.format == "JPEG"


def test_history_queue_and_descriptions_in_comfyui_shapes(served):
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt_id = str(uuid.uuid4())
    status, answer = post(served, "/prompt", {"prompt": prompt, "prompt_id": prompt_id})
    assert status == 200 and answer["prompt_id"] == prompt_id and answer["node_errors"] == {}
    assert isinstance(answer["number"], int)
    for _ in range(600):
        history = get(served, f"/history/{prompt_id}")
        if history:
            break
        import time

        time.sleep(0.1)
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][2] == prompt
    assert entry["prompt"][4] == ["9"]
    assert list(get(served, "/history")) == [prompt_id]
    assert get(served, "/queue") == {"queue_running": [], "queue_pending": []}
    assert get(served, "/prompt") == {"exec_info": {"queue_remaining": 0}}

    info = get(served, "/object_info")
    assert (
        "v1-5-pruned-emaonly.safetensors"
        in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    )
    assert "euler" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert info["Scheduler"]["category"] == "nodeflow/sampling"  # the project's own nodes too
    assert list(get(served, "/object_info/KSampler")) == ["KSampler"]
    stats = get(served, "/system_stats")
    assert stats["devices"] and "python_version" in stats["system"]

    # a prompt can use this project's nodes by name, beside ComfyUI's
    mixed = dict(prompt)
    mixed["20"] = {"class_type": "ScaleImage", "inputs": {"image": ["8", 0], "factor": 2.0}}
    mixed["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    status, answer = post(served, "/prompt", {"prompt": mixed})
    assert status == 200, answer


def test_bad_prompts_get_comfyui_node_errors_with_every_problem(served):
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x"}}
    prompt["8"]["inputs"]["samples"] = ["99", 0]
    prompt["3"]["inputs"]["sampler_name"] = "dpm_fast"
    status, answer = post(served, "/prompt", {"prompt": prompt})
    assert status == 400
    assert answer["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(answer["node_errors"]) == {"10", "8", "3"}
    assert answer["node_errors"]["10"]["class_type"] == "UpscaleModelLoader"
    codes = {(e["node"], e["input"], e["code"]) for e in answer["errors"]}
    assert ("8", "samples", "missing_link") in codes
    assert ("3", "sampler_name", "unsupported_value") in codes

    missing = json.loads((FIXTURES / "txt2img_api.json").read_text())
    missing["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    status, answer = post(served, "/prompt", {"prompt": missing})
    assert status == 400 and list(answer["node_errors"]) == ["4"]


def test_comfyui_routes_keep_the_servers_security_rules(served, comfy_dirs):
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    status, _ = post(served, "/prompt", {"prompt": prompt}, {"Origin": "http://evil.example"})
    assert status == 403
    status, _ = post(served, "/prompt", {"prompt": prompt}, {"Origin": "null"})
    assert status == 403
    for query in (
        "filename=..%2F..%2Fetc%2Fpasswd&type=output",
        "filename=x&subfolder=..&type=input",
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{served}/view?{query}")
        assert refused.value.code in (400, 403, 404)


def test_the_import_route_translates_comfyui_files_and_pngs(served):
    def send(body: bytes):
        request = urllib.request.Request(f"http://{served}/api/import", data=body)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, answer = send((FIXTURES / "hires_fix_ui.json").read_bytes())
    assert status == 200 and answer["format"] == "comfyui-ui"
    assert answer["workflow"]["nodes"]["10"]["type"] == "ScaleLatent"
    assert answer["workflow"]["ui"]["groups"][0]["title"] == "Second pass"
    assert answer["warnings"] == []  # dpmpp_2m / simple: ComfyScheduler has it exactly

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("workflow", (FIXTURES / "sdxl_ui.json").read_text())
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG", pnginfo=info)
    status, answer = send(png.getvalue())
    assert status == 200 and answer["workflow"]["nodes"]["6"]["type"] == "SizeConditioning"

    status, answer = send(b'{"1": {"class_type": "KSampler", "inputs": {"model": ["2", 0]}}}')
    assert status == 400
    assert ("1", "model", "missing_link") in {
        (e["node"], e["input"], e["code"]) for e in answer["errors"]
    }


def _until_done(ws: comfy_client.WebSocket, prompt_id: str) -> list[dict]:
    messages = []
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            messages.append(message)
            data = message["data"]
            done = message["type"] == "executing" and data["node"] is None
            if done and data["prompt_id"] == prompt_id:
                return messages


def test_a_failing_node_and_an_interrupt_are_told_as_comfyui_tells_them(served):
    ws = comfy_client.WebSocket()
    ws.connect(f"ws://{served}/ws?clientId={comfy_client.client_id}")
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["3"]["inputs"]["denoise"] = 0.5  # partial denoise of an empty latent: fails here
    status, answer = post(
        served, "/prompt", {"prompt": prompt, "client_id": comfy_client.client_id}
    )
    assert status == 200, answer
    messages = _until_done(ws, answer["prompt_id"])
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert error["node_id"] == "3" and error["node_type"] == "KSampler"
    assert "latent" in error["exception_message"] and error["exception_type"] == "ValueError"
    entry = get(served, f"/history/{answer['prompt_id']}")[answer["prompt_id"]]
    assert entry["status"]["status_str"] == "error"

    slow = json.loads((FIXTURES / "txt2img_api.json").read_text())
    slow["3"]["inputs"]["steps"] = 1000
    status, answer = post(served, "/prompt", {"prompt": slow, "client_id": comfy_client.client_id})
    while True:
        out = ws.recv()
        if not isinstance(out, str):
            continue
        message = json.loads(out)
        if message["type"] == "progress" and message["data"]["prompt_id"] == answer["prompt_id"]:
            break
    assert post(served, "/interrupt", {})[0] == 200
    messages = _until_done(ws, answer["prompt_id"])
    stopped = next(m["data"] for m in messages if m["type"] == "execution_interrupted")
    assert stopped["node_id"] == "3"
    ws.close()


def test_a_token_guards_comfyuis_routes_and_websocket_too(sd_catalog, runtime, tmp_path):
    port = free_port()
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    store = RunStore(tmp_path / "runs.sqlite3")
    executor = Executor(sd_catalog, env=env, runtime=runtime)
    config = ServerConfig(port=port, token="s3cret")
    background = Background(Server(sd_catalog, executor, store, config), port)
    address = f"127.0.0.1:{port}"
    try:
        for path in ("/system_stats", "/history", "/queue"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://{address}{path}")
            assert refused.value.code == 401
        assert "devices" in get(address, "/system_stats?token=s3cret")
        ws = comfy_client.WebSocket()
        with pytest.raises(ConnectionError):
            ws.connect(f"ws://{address}/ws?clientId=abc")
        ws.connect(f"ws://{address}/ws?clientId=abc&token=s3cret")
        assert json.loads(ws.recv())["data"]["sid"] == "abc"
        ws.close()
    finally:
        background.stop()
        store.close()
