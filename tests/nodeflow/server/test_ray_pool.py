"""Workers as Ray actors, on a local Ray on the CPU: dispatch, affinity, cancel, faults, files.

One Ray instance and one pool of two actors serve the module (starting actors costs seconds);
each actor has its own temporary folders, so nothing here relies on a disk shared with the
server. Ray is an optional dependency: without it these tests skip, except in CI (``CI=true``),
where its absence is a failure.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testnodes
import testnodes
from testnodes import make_workflow

from nodeflow import events as ev
from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.server.store import RunStore

TESTNODES_DIR = str(Path(__file__).resolve().parents[1])
FINAL = ("finished", "failed", "cancelled", "interrupted")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            raise
        pytest.skip('ray is not installed (pip install "nodeflow[ray]")')
    return ray


@pytest.fixture(scope="module")
def ray_instance() -> Any:
    ray = _ray()
    path = os.pathsep.join(p for p in (TESTNODES_DIR, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


class Pool:
    """A RayPool on a store of its own, recording every published event."""

    def __init__(self, tmp: Path, workers: int = 2) -> None:
        from nodeflow.server.ray_pool import PoolConfig, RayPool

        self.env = Environment.from_dirs(tmp / "models", tmp / "output", tmp / "input")
        self.store = RunStore(tmp / "runs.sqlite3")
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()
        config = PoolConfig(catalog_factory=testnodes.catalog, workers=workers, previews=False)
        executor = Executor(testnodes.catalog(), env=self.env)
        self.pool = RayPool(executor, self.store, publish=self._publish, config=config)
        self.pool.start()

    def _publish(self, event: ev.Event) -> None:
        with self._lock:
            self.events.append(event)

    def submit(self, nodes: dict[str, Any], front: bool = False) -> str:
        record, _ = self.store.submit(make_workflow(nodes).to_json(), front=front)
        self.pool.notify()
        return record.run_id

    def wait(self, run_ids: list[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = {r: self.store.get(r) for r in run_ids}
            if all(rec.status in FINAL for rec in records.values()):
                return records
            time.sleep(0.02)
        raise AssertionError(f"runs not done: {[r for r in run_ids if records[r].status]}")

    def until(self, condition: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    def of(self, run_id: str) -> list[ev.Event]:
        with self._lock:
            return [e for e in self.events if e.run_id == run_id]


@pytest.fixture(scope="module")
def pool(ray_instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pool = Pool(tmp_path_factory.mktemp("pool"))
    pool.until(lambda: all(w["state"] == "idle" for w in pool.pool.queue_message()["workers"]))
    yield pool
    assert pool.pool.stop(timeout=10)
    pool.store.close()


def sleeping(pool: Pool, run_id: str) -> bool:
    """Whether the run's Sleep node has started."""
    return any(isinstance(e, ev.NodeStarted) and e.node == "s" for e in pool.of(run_id))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sleeper(seed: int, seconds: float = 0.3, value: int = 1) -> dict[str, Any]:
    return {
        "c": ("Constant", {"value": value}),
        "p": ("Scale", {"x": "@c.integer", "factor": 2}),
        "s": ("Sleep", {"x": "@p.number", "seconds": seconds, "seed": seed}),
        "o": ("Mark", {"x": "@s.number"}),
    }


def test_runs_spread_over_two_workers_in_order_with_ordered_events(pool):
    ids = [pool.submit(sleeper(seed, seconds=0.5, value=100)) for seed in range(4)]
    records = pool.wait(ids)
    assert {r.status for r in records.values()} == {"finished"}
    assert {pool.pool.assigned[r] for r in ids} == {0, 1}
    # they ran two at a time: the second started before the first finished
    first, second = records[ids[0]], records[ids[1]]
    assert second.started_at < first.finished_at
    # claimed in queue order
    starts = [records[r].started_at for r in ids]
    assert starts == sorted(starts)
    for run_id in ids:
        types = [e.type for e in pool.of(run_id)]
        assert types[0] == "run.started" and types[-1] == "run.finished"
        assert types.count("run.finished") == 1
        assert types.index("node.started") < types.index("node.finished")


def test_a_seed_only_resubmission_goes_to_the_worker_holding_the_cache(pool):
    first = pool.submit(sleeper(seed=1, seconds=0.05, value=7))
    pool.wait([first])
    worker = pool.pool.assigned[first]
    again = pool.submit(sleeper(seed=2, seconds=0.05, value=7))
    pool.wait([again])
    assert pool.pool.assigned[again] == worker
    (finished,) = [e for e in pool.of(again) if isinstance(e, ev.RunFinished)]
    assert finished.executed == ["s", "o"]  # the prefix came from that worker's cache
    assert sorted(finished.cached) == ["c", "p"]


def test_cancel_and_interrupt_reach_the_right_worker(pool):
    a = pool.submit(sleeper(seed=10, seconds=30))
    b = pool.submit(sleeper(seed=11, seconds=30))
    c = pool.submit(sleeper(seed=12, seconds=30))
    pool.until(lambda: pool.store.get(b).status == "running" and pool.pool.actor_of(b))
    pool.until(lambda: sleeping(pool, b))
    assert pool.store.cancel(c)  # queued: the store cancels it, no worker involved
    assert pool.pool.interrupt(b)
    assert pool.wait([b])[b].status == "cancelled"
    assert pool.store.get(a).status == "running"  # the other worker's run goes on
    assert pool.pool.interrupt("no-such-run") is False
    assert pool.pool.interrupt(a)
    records = pool.wait([a, c])
    assert records[a].status == "cancelled" and records[c].status == "cancelled"
    assert [e.node for e in pool.of(b) if isinstance(e, ev.RunCancelled)] == ["s"]
    assert not any(e.run_id == c for e in pool.events)


def test_outputs_arrive_in_the_servers_folder_under_free_names(pool):
    ids = [pool.submit(sleeper(seed=20 + i, seconds=0.2, value=3)) for i in range(4)]
    records = pool.wait(ids)
    folder = pool.env.output_dir
    for run_id, record in records.items():
        assert record.status == "finished"
        (image,) = record.outputs["o"]["images"]
        path = folder / image["subfolder"] / image["filename"]
        assert path.read_text().split()[0] == run_id  # the record names the server's file
        assert record.outputs["o"]["files"] == [str(path)]
        finished = [e for e in pool.of(run_id) if isinstance(e, ev.NodeFinished) and e.report]
        assert finished[0].report == record.outputs["o"]
    worker_dirs = {w.info["output_dir"] for w in pool.pool._slots}
    assert len(worker_dirs) == 2 and str(folder) not in worker_dirs


def test_input_files_travel_with_the_run(pool):
    pool.env.input_dir.mkdir(parents=True, exist_ok=True)
    (pool.env.input_dir / "n.txt").write_text("5")
    run_id = pool.submit({"f": ("Files", {"path": "n.txt"})})  # validated on the worker
    record = pool.wait([run_id])[run_id]
    assert record.status == "finished", record.error
    assert record.outputs["f"]["files"][0] == "n.txt"


def test_killing_workers_mid_run_loses_no_run_and_runs_none_twice(pool):
    ray = sys.modules["ray"]
    ids = [pool.submit(sleeper(seed=1000 + i, seconds=0.1, value=11)) for i in range(50)]
    killed = 0
    deadline = time.monotonic() + 90
    while killed < 3 and time.monotonic() < deadline:
        # kill a worker while its run sleeps (before it wrote anything)
        running = [r for r in ids if pool.pool.actor_of(r) is not None]
        target = next((r for r in running if sleeping(pool, r)), None)
        if target is None:
            time.sleep(0.01)
            continue
        actor = pool.pool.actor_of(target)
        if actor is not None:
            ray.kill(actor)
            killed += 1
            time.sleep(0.5)
    assert killed == 3
    records = pool.wait(ids, timeout=120)
    finals = Counter(e.run_id for e in pool.events if isinstance(e, ev.RunFinished | ev.RunFailed))
    assert all(finals[r] == 1 for r in ids)  # exactly one final state each
    statuses = Counter(r.status for r in records.values())
    assert statuses["finished"] + statuses["failed"] == 50
    for record in records.values():
        if record.status == "failed":
            assert "died" in record.error["message"]
    marks = Counter(p.read_text().split()[0] for p in (pool.env.output_dir / "marks").glob("*.txt"))
    for run_id, record in records.items():  # none ran twice: one mark per finished run
        assert marks[run_id] == (1 if record.status == "finished" else marks[run_id])
        assert marks[run_id] <= 1
    assert len(pool.pool._retried) >= 1
    pool.until(lambda: all(w["state"] == "idle" for w in pool.pool.queue_message()["workers"]))


def test_a_run_whose_worker_dies_after_it_wrote_output_fails_and_keeps_that_output(pool):
    ray = sys.modules["ray"]
    nodes = {
        "c": ("Constant", {"value": 5}),
        "m": ("Mark", {"x": "@c.integer", "prefix": "early/mark"}),
        "s": ("Sleep", {"x": "@c.integer", "seconds": 30, "seed": 99}),
        "o": ("Show", {"x": "@s.number"}),
    }
    run_id = pool.submit(nodes)
    pool.until(lambda: sleeping(pool, run_id))
    (started,) = [e for e in pool.of(run_id) if isinstance(e, ev.RunStarted)]
    assert started.nodes.index("m") < started.nodes.index("s")  # the output came first
    ray.kill(pool.pool.actor_of(run_id))
    record = pool.wait([run_id])[run_id]
    assert record.status == "failed"
    assert "died" in record.error["message"] and record.error["node"] == "s"
    assert run_id not in pool.pool._retried  # not run again: it had written a file
    (mark,) = (pool.env.output_dir / "early").iterdir()
    assert mark.read_text().startswith(run_id)
    (final,) = [e for e in pool.of(run_id) if isinstance(e, ev.RunFailed)]
    assert "died" in final.message
    pool.until(lambda: all(w["state"] == "idle" for w in pool.pool.queue_message()["workers"]))


def test_stopping_records_the_running_run_interrupted_and_keeps_the_queue(ray_instance, tmp_path):
    own = Pool(tmp_path, workers=1)
    running = own.submit(sleeper(seed=1, seconds=30))
    queued = own.submit(sleeper(seed=2, seconds=30))
    own.until(lambda: sleeping(own, running))
    assert own.pool.stop(timeout=10) is True
    assert own.store.get(running).status == "interrupted"
    assert own.store.get(running).error["node"] == "s"
    assert own.store.get(queued).status == "queued"  # the next start runs it
    own.store.close()


def test_the_server_serves_ray_workers_outputs_over_http(ray_instance, tmp_path):
    import aiohttp
    from aiohttp import web

    from nodeflow.server.app import Server, ServerConfig
    from nodeflow.server.ray_pool import PoolConfig, RayPool

    async def scenario() -> None:
        port = free_port()
        env = Environment.from_dirs(tmp_path / "models", tmp_path / "output", tmp_path / "input")
        store = RunStore(tmp_path / "runs.sqlite3")
        config = PoolConfig(catalog_factory=testnodes.catalog, workers=1)
        server = Server(
            testnodes.catalog(),
            Executor(testnodes.catalog(), env=env),
            store,
            ServerConfig(port=port),
            workers=functools.partial(RayPool, config=config),
        )
        runner = web.AppRunner(server.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                workflow = make_workflow(sleeper(seed=1, seconds=0.1)).to_json()
                async with session.post(f"{base}/api/runs", json={"workflow": workflow}) as r:
                    run_id = (await r.json())["run_id"]
                for _ in range(1500):
                    async with session.get(f"{base}/api/runs/{run_id}") as r:
                        run = await r.json()
                    if run["status"] in FINAL:
                        break
                    await asyncio.sleep(0.02)
                assert run["status"] == "finished", run
                url = run["outputs"]["o"]["images"][0]["url"]
                async with session.get(f"{base}{url}") as r:
                    assert r.status == 200
                    assert (await r.text()).startswith(run_id)
                async with session.get(f"{base}/api/system") as r:
                    queue = (await r.json())["queue"]
                assert [w["state"] for w in queue["workers"]] == ["idle"]
        finally:
            await runner.cleanup()
            store.close()

    asyncio.run(scenario())


def test_a_plain_server_does_not_import_ray():
    code = (
        "import sys\n"
        "import nodeflow.server.app, nodeflow.cli\n"
        "from nodeflow.cli import _parser, _workers\n"
        "from nodeflow.plugins import load_catalog\n"
        "args = _parser(load_catalog(entry_points=False)).parse_args(['serve'])\n"
        "assert _workers(args) == {}\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_nodeflow_serve_with_two_workers_runs_and_stops(ray_instance, tmp_path, install_plugin):
    """The command line end to end: ``--workers 2`` starts a local Ray of its own (another one
    than this module's), runs on both actors, and SIGTERM ends it with that Ray."""
    from test_serve import TESTS, get, submit, wait_for

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
    env["PYTHONUNBUFFERED"] = "1"
    port = free_port()
    command = [sys.executable, "-m", "nodeflow.cli", "--disable-plugin", "nodes", "serve"]
    command += ["--port", str(port), "--db", str(tmp_path / "runs.sqlite3")]
    command += ["--output-dir", str(tmp_path / "out"), "--workers", "2"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                queue = get(port, "/api/system")["queue"]
                if [w["state"] for w in queue["workers"]] == ["idle", "idle"]:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            time.sleep(0.2)
        workflow = make_workflow(sleeper(seed=0, seconds=0.5)).to_json()
        for node in workflow["nodes"].values():
            node["type"] = f"testnodes.{node['type']}"
        ids = []
        for seed in range(4):
            workflow["nodes"]["s"]["inputs"]["seed"] = seed
            ids.append(submit(port, workflow))
        runs = [wait_for(port, run_id, set(FINAL), timeout=60) for run_id in ids]
        assert [run["status"] for run in runs] == ["finished"] * 4
        marks = sorted(p.read_text().split()[0] for p in (tmp_path / "out/marks").iterdir())
        assert marks == sorted(ids)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        log.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--workers", "3", "--devices", "cuda:0,cuda:1"], "one worker per device"),
    ],
)
def test_serve_refuses_worker_options_that_make_no_sense(options, message, capsys):
    from nodeflow.cli import EXIT_INVALID, main

    assert main(["--no-plugins", "serve", *options]) == EXIT_INVALID
    assert message in capsys.readouterr().err
