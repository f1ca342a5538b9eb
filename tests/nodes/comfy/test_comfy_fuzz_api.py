"""Fuzzing ComfyUI's /prompt with the real pack's importer: random and mutated prompts, odd ids,
bodies that are not JSON; every answer is below 500 and every refusal is ComfyUI's error shape
(with the structured ``errors`` beside it). The models dir is empty, so nothing is ever run."""

from __future__ import annotations

import copy
import json
import os
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_comfy_fuzz import TEMPLATES, _mutate, json_values
from test_comfy_server import Background, free_port

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.store import RunStore

API_TEMPLATES = sorted(name for name in TEMPLATES if name.endswith("_api"))


@pytest.fixture(scope="module")
def address(sd_catalog, runtime, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy-fuzz")
    port = free_port()
    env = Environment.from_dirs(tmp / "models", tmp / "out", tmp / "in")
    store = RunStore(tmp / "runs.sqlite3")
    executor = Executor(sd_catalog, env=env, runtime=runtime)
    background = Background(Server(sd_catalog, executor, store, ServerConfig(port=port)), port)
    yield f"127.0.0.1:{port}"
    background.stop()
    store.close()


def post(address: str, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{address}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "ui", "bytes", "fields"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    name = draw(st.sampled_from(API_TEMPLATES))
    if kind == "ui":
        prompt = _mutate(TEMPLATES[name.replace("_api", "_ui")], draw(st.data()))
    else:
        prompt = _mutate(TEMPLATES[name], draw(st.data()))
    body = {"prompt": prompt}
    if kind == "fields":
        body = copy.deepcopy({"prompt": TEMPLATES[name]})
        for field in ("prompt_id", "client_id", "extra_data", "front", "number"):
            if draw(st.booleans()):
                body[field] = draw(json_values)
    return json.dumps(body).encode()


def test_no_prompt_gets_a_5xx(address):
    @settings(
        max_examples=int(os.environ.get("NODEFLOW_FUZZ_EXAMPLES", "150")),
        deadline=None,
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
    )
    @given(bodies())
    def fuzz(body: bytes) -> None:
        status, answer = post(address, "/prompt", body)
        assert status < 500, answer[:300]
        if status >= 400:
            data = json.loads(answer)
            assert isinstance(data["error"], dict) and "node_errors" in data
            for issue in data.get("errors", []):
                assert set(issue) == {"node", "input", "code", "message"}

    fuzz()
