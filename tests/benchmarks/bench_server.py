"""Server overhead: websocket hub fan-out and per-run latency through the HTTP API.

Run from the repository root::

    python tests/benchmarks/bench_server.py [--clients 50] [--events N] [--runs N] [--no-write]

Everything is on loopback (127.0.0.1). The server runs in this process; the websocket / HTTP
clients run in a separate process (``multiprocessing``, spawn), so the clients' receive cost does
not share the server's event loop. Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, the same
clock in both processes on Linux).

1. Hub fan-out. An aiohttp app holding just a :class:`~nodeflow.server.hub.Hub` at ``/api/ws``;
   ``--clients`` clients connect; a publisher thread in the server process calls
   ``hub.publish(NodeStarted(...))`` ``--events`` times (state events: every one must arrive).
   Two modes:

   * ``burst``: as fast as the thread can, no flow control at all;
   * ``paced``: the same, but every 100 events the publisher waits for the loop to catch up and,
     while some client's outbox holds more than half of ``max_queue``, pauses 1 ms (so the hub
     is measured at the rate it can sustain, inside its designed queue bounds).

   Time is from the first publish to the last client receiving the last event; events/s =
   events / time, messages/s = events × clients / time. Every client checks that it got every
   event, in order; ``hub.stats()`` (slow-client disconnects, dropped previews, deepest outbox)
   is reported. "server done" is when every outbox was empty after the last publish.

2. Per-run latency. The full :class:`~nodeflow.server.app.Server` with the pure-Python test nodes
   (``tests/nodeflow/testnodes.py``); a client connected to ``/api/ws`` POSTs ``/api/runs`` with
   a two-node workflow (Constant -> Show) and waits for that run's ``run.finished``, ``--runs``
   times in a row. ``varied``: a different Constant value each run (both nodes execute);
   ``same``: the identical workflow each run (both nodes cached: pure server + engine overhead).
   Engine only: ``Executor.run(Workflow.from_json(doc))`` on an Executor of its own, same
   workflows, same count, no server.

It prints markdown tables and writes them as a section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing as mp
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nodeflow"))  # testnodes
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))  # report (when imported, e.g. spawn)
import aiohttp  # noqa: E402
import testnodes  # noqa: E402
from aiohttp import web  # noqa: E402
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodeflow.context import Environment  # noqa: E402
from nodeflow.events import NodeStarted  # noqa: E402
from nodeflow.executor import Executor  # noqa: E402
from nodeflow.plugins import load_catalog  # noqa: E402
from nodeflow.server.app import Server, ServerConfig  # noqa: E402
from nodeflow.server.hub import Hub  # noqa: E402
from nodeflow.server.store import RunStore  # noqa: E402
from nodeflow.workflow import Workflow  # noqa: E402

SECTION = "## Server (tests/benchmarks/bench_server.py)"
CHECK_EVERY = 100  # paced mode: the publisher syncs with the loop every this many events
DEADLINE = 120.0  # seconds: no scenario may take longer than this
FINAL = ("run.finished", "run.failed", "run.cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workflow(value: int) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "c": {"type": "Constant", "inputs": {"value": value}},
            "o": {"type": "Show", "inputs": {"x": {"from": "c.integer"}}},
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- client process --------------------------------------------------------------------------


def _client_process(kind: str, args: tuple, out: Any) -> None:
    """Entry point of the client process; puts ("ready", ...) and then ("result", ...)."""
    try:
        if kind == "fanout":
            result = asyncio.run(_fanout_clients(*args, out))
        else:
            result = asyncio.run(_run_client(*args, out))
        out.put(("result", result))
    except BaseException as exc:  # report, never hang the parent
        out.put(("error", repr(exc)))


async def _fanout_clients(port: int, clients: int, events: int, out: Any) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/ws"
    deadline = time.monotonic() + DEADLINE
    async with aiohttp.ClientSession() as session:
        sockets = []
        for _ in range(clients):
            ws = await session.ws_connect(url, max_msg_size=0)
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello", hello
            sockets.append(ws)
        out.put(("ready", clients))

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            expected, in_order, first, last = 0, True, None, None
            while expected < events and time.monotonic() < deadline:
                try:
                    msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break  # closed (a slow-client disconnect) or an error
                data = msg.json()
                if data.get("type") != "node.started":
                    continue
                if first is None:
                    first = time.monotonic()
                if int(data["node_type"]) != expected:
                    in_order = False
                expected += 1
                if expected == events:
                    last = time.monotonic()
            return {"received": expected, "in_order": in_order, "first": first, "last": last}

        results = await asyncio.gather(*(receive(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
    return {"clients": results}


async def _run_client(port: int, docs: list[dict], warmup: int, out: Any) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE
    latencies: list[float] = []
    executed: list[int] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base}/api/ws") as ws,
    ):
        out.put(("ready", 1))
        for i, doc in enumerate(docs):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            async with session.post(f"{base}/api/runs", json={"workflow": doc}) as r:
                body = await r.json()
                assert r.status == 201, body
            run_id = body["run_id"]
            final = None
            while final is None:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"websocket ended: {msg.type}")
                data = msg.json()
                if data.get("run_id") == run_id and data.get("type") in FINAL:
                    final = data
            t1 = time.monotonic()
            assert final["type"] == "run.finished", final
            if i >= warmup:
                latencies.append(t1 - t0)
                executed.append(len(final.get("executed", [])))
    return {"latencies": latencies, "executed": executed}


def start_client(kind: str, args: tuple) -> tuple[Any, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client_process, args=(kind, args, out), daemon=True)
    proc.start()
    return proc, out


async def expect(out: Any, tag: str, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    try:
        got, value = await loop.run_in_executor(None, out.get, True, timeout)
    except queue.Empty:
        raise RuntimeError(f"client process sent no {tag!r} within {timeout} s") from None
    if got != tag:
        raise RuntimeError(f"client process: {got}: {value}")
    return value


def stop_client(proc: Any) -> None:
    proc.join(10)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


# --- 1. hub fan-out --------------------------------------------------------------------------


@dataclass
class Fanout:
    mode: str
    clients: int
    events: int
    seconds: float
    server_seconds: float
    publish_seconds: float
    complete: int  # clients that got every event
    in_order: bool
    stats: dict[str, int]

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")


def _outbox_depth(hub: Hub) -> int:
    # Private, read on the loop thread: the current (not high-water) depth of the deepest outbox.
    return max((len(c.outbox) for c in list(hub._clients.values())), default=0)


def _publisher(hub: Hub, loop: asyncio.AbstractEventLoop, n: int, paced: bool, t: dict) -> None:
    window = hub.max_queue // 2
    deadline = time.monotonic() + DEADLINE

    async def depth() -> int:
        return _outbox_depth(hub)

    t["first"] = time.monotonic()
    for i in range(n):
        hub.publish(NodeStarted(run_id="bench", node="k", node_type=str(i)))
        if paced and i % CHECK_EVERY == CHECK_EVERY - 1:
            for _ in range(int(DEADLINE * 1000)):
                d = asyncio.run_coroutine_threadsafe(depth(), loop).result(timeout=DEADLINE)
                if d <= window or time.monotonic() > deadline:
                    break
                time.sleep(0.001)
    t["published"] = time.monotonic()


async def fanout(mode: str, clients: int, events: int) -> Fanout:
    hub = Hub()
    app = web.Application()
    app.router.add_get("/api/ws", hub.handler)

    async def on_startup(app: web.Application) -> None:
        hub.attach(asyncio.get_running_loop())

    app.on_startup.append(on_startup)
    app.on_shutdown.append(lambda app: hub.close())
    port = free_port()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proc, out = start_client("fanout", (port, clients, events))
    try:
        await expect(out, "ready", 60)
        for _ in range(1000):  # the last handler may still be registering
            if hub.clients == clients:
                break
            await asyncio.sleep(0.01)
        assert hub.clients == clients, hub.stats()
        gc.collect()
        t: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=_publisher, args=(hub, loop, events, mode == "paced", t), daemon=True
        )
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.005)
        thread.join()
        server_done = None
        for _ in range(int(DEADLINE * 1000)):  # queued fan-outs ran before this; drain outboxes
            if _outbox_depth(hub) == 0 or time.monotonic() - t["published"] > DEADLINE:
                server_done = time.monotonic()
                break
            await asyncio.sleep(0.001)
        stats = hub.stats()  # before the clients close: counts the connected ones
        result = await expect(out, "result", DEADLINE + 30)
    finally:
        stop_client(proc)
        await runner.cleanup()
    per = result["clients"]
    lasts = [c["last"] for c in per if c["last"] is not None]
    complete = sum(1 for c in per if c["received"] == events)
    end = max(lasts) if complete == clients else float("nan")
    return Fanout(
        mode=mode,
        clients=clients,
        events=events,
        seconds=end - t["first"],
        server_seconds=(server_done or float("nan")) - t["first"],
        publish_seconds=t["published"] - t["first"],
        complete=complete,
        in_order=all(c["in_order"] for c in per),
        stats=stats,
    )


# --- 2. per-run latency ------------------------------------------------------------------------


@dataclass
class Latency:
    mode: str
    server: list[float]
    engine: list[float]
    executed: set[int]
    engine_executed: set[int]


def docs_for(mode: str, runs: int, warmup: int) -> list[dict]:
    if mode == "same":
        return [workflow(7)] * (warmup + runs)
    # distinct values in [-1000, 1000]: warm-up ones first, never repeated
    return [workflow(-1000 + i) for i in range(warmup)] + [workflow(i) for i in range(runs)]


async def server_latency(tmp: Path, mode: str, runs: int, warmup: int) -> tuple[list, set]:
    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    root = tmp / f"server-{mode}"
    env = Environment.from_dirs(root / "models", root / "output", root / "input")
    store = RunStore(root / "runs.sqlite3")
    port = free_port()
    server = Server(catalog, Executor(catalog, env=env), store, ServerConfig(port=port))
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proc, out = start_client("run", (port, docs_for(mode, runs, warmup), warmup))
    try:
        await expect(out, "ready", 60)
        result = await expect(out, "result", DEADLINE + 30)
    finally:
        stop_client(proc)
        await runner.cleanup()
        store.close()
    return result["latencies"], set(result["executed"])


def engine_latency(tmp: Path, mode: str, runs: int, warmup: int) -> tuple[list, set]:
    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    root = tmp / f"engine-{mode}"
    env = Environment.from_dirs(root / "models", root / "output", root / "input")
    executor = Executor(catalog, env=env)
    times, executed = [], set()
    gc.collect()
    for i, doc in enumerate(docs_for(mode, runs, warmup)):
        t0 = time.perf_counter()
        result = executor.run(Workflow.from_json(doc))
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
            executed.add(len(result.executed))
    return times, executed


# --- report ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fanout_table(rows: list[Fanout]) -> str:
    lines = [
        "| hub fan-out | clients | events | end to end: events/s | end to end: messages/s "
        "| first publish → last client got last | server side: outboxes empty after | "
        "server side: events/s (messages/s) | publishing took | every client got every event, "
        "in order | slow-client disconnects | dropped (droppable) | deepest outbox |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ok = r.complete == r.clients and r.in_order
        got = "yes" if ok else f"NO: {r.complete}/{r.clients} clients got all"
        if ok:
            e2e = f"{r.events_per_s:,.0f} | {r.events_per_s * r.clients:,.0f} | {ms(r.seconds)}"
        else:
            e2e = "— | — | —"
        if r.stats["slow_disconnects"] == 0 and r.server_seconds == r.server_seconds:
            rate = r.events / r.server_seconds
            side = f"{ms(r.server_seconds)} | {rate:,.0f} ({rate * r.clients:,.0f})"
        else:
            side = "— | —"
        lines.append(
            f"| {r.mode} | {r.clients} | {r.events:,} | {e2e} | {side} | "
            f"{ms(r.publish_seconds)} | {got} | {r.stats['slow_disconnects']} | "
            f"{r.stats['dropped']} | {r.stats['max_queue_depth']:,} |"
        )
    return "\n".join(lines)


def latency_table(rows: list[Latency]) -> str:
    lines = [
        "| Constant → Show, sequential | runs | nodes executed per run | server median | "
        "server p95 | server runs/s | engine-only median | engine-only p95 | "
        "server − engine (median) | server / engine (median) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sm, em = statistics.median(r.server), statistics.median(r.engine)
        what = (
            "varied: new Constant value each run"
            if r.mode == "varied"
            else ("same: identical workflow (all cached)")
        )
        executed = "/".join(str(x) for x in sorted(r.executed | r.engine_executed))
        lines.append(
            f"| {what} | {len(r.server)} | {executed} | {ms(sm)} | {ms(pct(r.server, 0.95))} | "
            f"{len(r.server) / sum(r.server):,.0f} | {ms(em)} | {ms(pct(r.engine, 0.95))} | "
            f"{ms(sm - em)} | {sm / em:,.1f}× |"
        )
    return "\n".join(lines)


def machine() -> str:
    return machine_summary(f"aiohttp {aiohttp.__version__}")


def section(command: str, fan: list[Fanout], lat: list[Latency]) -> str:
    return "\n".join(
        [
            SECTION,
            "",
            f"- Date: {utc_date()}",
            f"- Machine: {machine()}",
            f"- Command: `{command}`",
            "- Method: server in the benchmark process, clients in a separate (spawned) process, "
            "loopback only. Hub fan-out: an aiohttp app with just a `Hub` (default "
            "`max_queue` 1000) at `/api/ws`; a publisher thread in the server process calls "
            "`hub.publish(NodeStarted(...))` (a state event, never dropped) for every event; "
            "time from the first publish to "
            "the last client receiving the last event (`time.monotonic`, shared by both "
            "processes); server side: until every client's outbox was empty again (all handed to "
            "the sockets). `burst`: no flow control; `paced`: every 100 events the publisher "
            "waits for the loop and pauses while an outbox holds > 500. With one Python client "
            "process receiving for all clients, the end-to-end rate is bounded by the clients' "
            "receive cost; the server-side rate is the hub's. Per-run latency: the "
            "full `Server` (test nodes, SQLite run store), one client connected to `/api/ws` "
            "POSTs `/api/runs` and waits for that run's `run.finished`, runs one after another "
            "(after 5 warm-up runs); engine-only: `Executor.run(Workflow.from_json(doc))` "
            "directly, same workflows.",
            "- Caveat: absolute times are for this shared 2-core CPU (server, publisher and "
            "clients compete for the two cores); compare ratios, not absolute numbers.",
            "",
            fanout_table(fan),
            "",
            latency_table(lat),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--no-write", dest="write", action="store_false", help="do not touch BENCHMARKS.md"
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not (1 <= args.runs <= 1000 and 0 <= args.warmup <= 100):
        parser.error("--runs must be 1..1000 and --warmup 0..100 (Constant values are unique)")
    command = "python tests/benchmarks/bench_server.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )

    fan = []
    for mode in ("paced", "burst"):
        print(f"hub fan-out, {mode} ...", file=sys.stderr, flush=True)
        fan.append(asyncio.run(fanout(mode, args.clients, args.events)))
    lat = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        for mode in ("varied", "same"):
            print(f"per-run latency, {mode} ...", file=sys.stderr, flush=True)
            server, executed = asyncio.run(server_latency(Path(tmp), mode, args.runs, args.warmup))
            engine, engine_executed = engine_latency(Path(tmp), mode, args.runs, args.warmup)
            lat.append(Latency(mode, server, engine, executed, engine_executed))

    text = section(command.strip(), fan, lat)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
        print(f"wrote the section to {args.markdown}", file=sys.stderr)
    ok = all(r.complete == r.clients and r.in_order for r in fan if r.mode == "paced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
