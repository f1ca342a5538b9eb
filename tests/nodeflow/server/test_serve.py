"""``nodeflow serve`` as a real process: startup, SIGKILL and restart, SIGTERM, binds, logs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from nodeflow.server.store import RunStore

TESTS = Path(__file__).resolve().parents[1]


def slow(steps: int, delay: float) -> dict:
    """A run that counts to ``steps``, sleeping ``delay`` between interrupt points."""
    return {
        "version": 1,
        "nodes": {
            "c": {"type": "testnodes.Constant"},
            "w": {
                "type": "testnodes.Slow",
                "inputs": {"x": {"from": "c.integer"}, "steps": steps, "delay": delay},
            },
            "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "w.number"}}},
        },
    }


SLOW = slow(1000, 0.01)  # an interrupt point every 10 ms
STUCK = slow(1, 60.0)  # a node that never reaches an interrupt point
QUICK = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant", "inputs": {"value": 4}},
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "c.integer"}}},
    },
}
FAILING = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant"},
        "f": {"type": "testnodes.Fail", "inputs": {"x": {"from": "c.integer"}, "message": "boom"}},
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "f.number"}}},
    },
}

SLOW_TEARDOWN = """
import time

from nodeflow import hookimpl


class SlowToFree:
    '''Stands in for torch and diffusers, whose teardown at interpreter exit takes seconds.'''

    def __del__(self):
        time.sleep(10)


KEPT = SlowToFree()


@hookimpl
def nodeflow_nodes():
    return []
"""


class Served:
    """A ``nodeflow serve`` process whose output is read as it comes (a full pipe would stall it,
    now that it logs every request)."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 90) -> float:
        """Send ``sig`` and wait for the process to end; returns the seconds that took."""
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout)
        elapsed = time.monotonic() - started
        self._reader.join(10)
        return elapsed


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
    env["NODEFLOW_HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    served: list[Served] = []

    def start(port: int, *options: str) -> Served:
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
                *options,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        server = Served(process, port)
        served.append(server)
        headers = {"Authorization": f"Bearer {options[-1]}"} if "--auth-token" in options else {}
        for _ in range(400):
            try:
                get(port, "/api/system", headers)
                break
            except OSError:
                assert process.poll() is None, server.output()
                time.sleep(0.05)
        else:
            raise AssertionError(f"server did not come up:\n{server.output()}")
        assert f"serving http://127.0.0.1:{port}/" in server.output()
        return server

    yield start
    for server in served:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def submit(port: int, workflow: dict, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/runs",
        data=json.dumps({"workflow": workflow}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        return json.loads(response.read())["run_id"]


def wait_for(
    port: int,
    run_id: str,
    statuses: set[str],
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get(port, f"/api/runs/{run_id}", headers)
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"{run_id} never reached {statuses}")


def submit_and_wait_for_node(port: int, workflow: dict, node: str, timeout: float = 30) -> str:
    """Submit ``workflow`` and return its run id once ``node`` has started, as the websocket
    tells it: a run's "running" status comes before its first node starts, and on a loaded
    machine a stop between the two finds no node to name."""
    import aiohttp

    async def scenario() -> str:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/api/ws") as ws:
            # the server lists a client once it has sent its hello: events before that are lost
            assert (await ws.receive_json())["type"] == "hello"
            async with session.post(f"{base}/api/runs", json={"workflow": workflow}) as response:
                assert response.status == 201
                run_id = (await response.json())["run_id"]
            async for message in ws:
                data = message.json()
                if data.get("run_id") == run_id and (data["type"], data.get("node")) == (
                    "node.started",
                    node,
                ):
                    return run_id
        raise AssertionError(f"the websocket closed before {node!r} started")

    return asyncio.run(asyncio.wait_for(scenario(), timeout))


def open_silent_websocket(port: int) -> socket.socket:
    """A websocket client that connects and then never reads or answers (a hung browser tab)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101"), "websocket upgrade refused"
    return sock


def start_stalled_upload(port: int) -> socket.socket:
    """An upload whose client stops sending halfway (a slow link, a closed laptop lid)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"POST /api/uploads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 1000000\r\n\r\n"
        '--zz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n\x89PNG".encode("latin-1")
    )
    return sock


def test_sigkill_and_restart_lose_no_run(serve):
    port = free_port()
    server = serve(port)
    slow_run = submit(port, SLOW)
    queued = [submit(port, QUICK) for _ in range(5)]
    wait_for(port, slow_run, {"running"})
    server.stop(signal.SIGKILL)

    serve(port)  # the same database
    assert wait_for(port, slow_run, {"interrupted"})["error"]["message"]
    for run_id in queued:
        run = wait_for(port, run_id, {"finished"})
        assert run["outputs"]["o"]["value"] == 4
    history = get(port, "/api/runs")["runs"]
    assert {r["run_id"] for r in history} == {slow_run, *queued}


def test_sigterm_stops_an_idle_server_at_once(serve, install_plugin):
    """Nothing an idle server holds may delay its exit: not a websocket client that never
    answers the goodbye, not an upload stalled halfway, not slow module teardown at exit."""
    install_plugin("nodeflow-slowteardown", "slow_teardown", SLOW_TEARDOWN, entry_name="slow")
    port = free_port()
    server = serve(port)
    plugins = {p["name"] for p in get(port, "/api/system")["plugins"]}
    assert {"testnodes", "slow"} <= plugins and "nodes" not in plugins  # --disable-plugin nodes
    with open_silent_websocket(port), start_stalled_upload(port):
        time.sleep(0.5)  # let the server start handling the upload
        seconds = server.stop()
    assert server.process.returncode == 0, server.output()
    # 0.5 s on an idle machine; the bound is loose for loaded CI machines and still far below
    # what the slow teardown (10 s) or the stalled upload (60 s) cost before.
    assert seconds < 6, f"SIGTERM took {seconds:.1f}s:\n{server.output()}"


def test_sigterm_interrupts_the_running_run_and_records_it_interrupted(serve, tmp_path):
    port = free_port()
    server = serve(port)
    run_id = submit_and_wait_for_node(port, SLOW, "w")
    seconds = server.stop()
    assert server.process.returncode == 0, server.output()
    assert seconds < 6, f"SIGTERM took {seconds:.1f}s:\n{server.output()}"  # about 1 s idle

    store = RunStore(tmp_path / "runs.sqlite3")
    try:
        run = store.get(run_id)
    finally:
        store.close()
    assert run is not None and run.status == "interrupted"
    assert run.error is not None and run.error["node"] == "w"
    assert "stopped" in run.error["message"]
    assert f"run {run_id} interrupted" in server.output()


def test_sigterm_does_not_wait_for_a_node_that_never_checks_for_interrupts(serve):
    port = free_port()
    server = serve(port)
    run_id = submit(port, STUCK)
    wait_for(port, run_id, {"running"})
    seconds = server.stop()
    assert server.process.returncode == 0, server.output()
    # a 3 s grace, then exit; before, the worker waited 30 s
    assert seconds < 15, f"SIGTERM took {seconds:.1f}s:\n{server.output()}"

    serve(port)  # the next start marks it interrupted, as after a crash
    assert wait_for(port, run_id, {"interrupted"})["error"]["message"]


def test_the_terminal_shows_each_run_event_and_every_request_but_never_the_token(serve):
    token = "s3cret-TOKEN-value"
    bearer = {"Authorization": f"Bearer {token}"}
    port = free_port()
    server = serve(port, "--auth-token", token)
    finished = submit(port, QUICK, bearer)
    failed = submit(port, FAILING, bearer)
    wait_for(port, finished, {"finished"}, headers=bearer)
    wait_for(port, failed, {"failed"}, headers=bearer)
    get(port, f"/api/system?token={token}")
    get(port, f"/api/nodes?a=1&%74oken={token}")  # the server reads %74oken as token, too
    get(port, "/api/types", {**bearer, "Referer": f"http://127.0.0.1:{port}/?token={token}"})
    server.stop()
    output = server.output()

    assert token not in output
    assert '"GET /api/system?token=*** HTTP/1.1" 200' in output
    assert '"GET /api/nodes?a=1&%74oken=*** HTTP/1.1" 200' in output
    assert '"GET /api/types HTTP/1.1" 200' in output
    for line in [
        f"run {finished} queued: 2 nodes, position 0",
        f"run {finished} started: 2 nodes planned",
        f"run {finished} finished in ",
        "2 nodes (2 ran, 0 cached)",
        f"run {failed} queued: 3 nodes",
        f"run {failed} failed after ",
        "in node 'f' (testnodes.Fail): boom",
    ]:
        assert line in output, output


def test_a_public_bind_needs_a_token():
    result = subprocess.run(
        [sys.executable, "-m", "nodeflow.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "without --auth-token" in result.stderr
