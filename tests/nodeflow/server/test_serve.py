"""``nodeflow serve`` as a real process: startup, SIGKILL and restart, SIGTERM, bind policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SLOW = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant"},
        "w": {
            "type": "testnodes.Slow",
            "inputs": {"x": {"from": "c.integer"}, "steps": 1000, "delay": 0.01},
        },
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "w.number"}}},
    },
}
QUICK = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant", "inputs": {"value": 4}},
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "c.integer"}}},
    },
}


@pytest.fixture
def serve(tmp_path, install_plugin):
    install_plugin(
        "nodeflow-testnodes",
        "serve_testnodes",
        "from testnodes import nodeflow_nodes, nodeflow_types\n",
        entry_name="testnodes",
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "site"), str(TESTS), env.get("PYTHONPATH", "")]
    )
    processes = []

    def start(port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodeflow.cli",
                "--disable-plugin",
                "nodes",
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "runs.sqlite3"),
                "--output-dir",
                str(tmp_path / "out"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        line = process.stdout.readline()
        assert f"serving http://127.0.0.1:{port}/" in line, line
        for _ in range(200):  # the banner comes just before the socket is bound
            try:
                get(port, "/api/system")
                return process
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server did not come up")

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def submit(port: int, workflow: dict) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/runs",
        data=json.dumps({"workflow": workflow}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        return json.loads(response.read())["run_id"]


def wait_for(port: int, run_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get(port, f"/api/runs/{run_id}")
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"{run_id} never reached {statuses}")


def test_sigkill_and_restart_lose_no_run(serve):
    port = free_port()
    server = serve(port)
    slow = submit(port, SLOW)
    queued = [submit(port, QUICK) for _ in range(5)]
    wait_for(port, slow, {"running"})
    server.send_signal(signal.SIGKILL)
    server.wait(10)

    serve(port)  # the same database
    assert wait_for(port, slow, {"interrupted"})["error"]["message"]
    for run_id in queued:
        run = wait_for(port, run_id, {"finished"})
        assert run["outputs"]["o"]["value"] == 4
    history = get(port, "/api/runs")["runs"]
    assert {r["run_id"] for r in history} == {slow, *queued}


def test_sigterm_shuts_down_cleanly(serve):
    port = free_port()
    server = serve(port)
    plugins = {p["name"] for p in get(port, "/api/system")["plugins"]}
    assert "testnodes" in plugins and "nodes" not in plugins  # --disable-plugin nodes
    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0


def test_a_public_bind_needs_a_token():
    result = subprocess.run(
        [sys.executable, "-m", "nodeflow.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "without --auth-token" in result.stderr
