"""One INFO line per run event, naming the run, its duration, node counts and any error."""

from __future__ import annotations

import asyncio
import logging

from test_app import GOOD, Running

SLOW = {
    "version": 1,
    "nodes": {
        "c": {"type": "Constant"},
        "w": {"type": "Slow", "inputs": {"x": {"from": "c.integer"}, "steps": 500, "delay": 0.01}},
        "o": {"type": "Show", "inputs": {"x": {"from": "w.number"}}},
    },
}
FAILING = {
    "version": 1,
    "nodes": {
        "c": {"type": "Constant"},
        "f": {"type": "Fail", "inputs": {"x": {"from": "c.integer"}, "message": "boom"}},
        "o": {"type": "Show", "inputs": {"x": {"from": "f.number"}}},
    },
}


def run_lines(caplog, run_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "nodeflow.server.runs" and r.getMessage().startswith(f"run {run_id} ")
    ]


def test_each_run_event_is_one_info_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nodeflow.server.runs")

    async def scenario() -> dict[str, str]:
        async with Running(tmp_path) as srv:
            _, good = await srv.submit(GOOD)
            await srv.until_done(good["run_id"])
            _, failing = await srv.submit(FAILING)
            await srv.until_done(failing["run_id"])

            _, slow = await srv.submit(SLOW)
            _, waiting = await srv.submit(GOOD)
            async with srv.session.post(f"{srv.base}/api/runs/{waiting['run_id']}/cancel") as r:
                assert r.status == 200
            for _ in range(1000):
                if srv.server.worker.current == slow["run_id"]:
                    break
                await asyncio.sleep(0.01)
            async with srv.session.post(f"{srv.base}/api/runs/{slow['run_id']}/cancel") as r:
                assert (await r.json())["status"] == "interrupting"
            await srv.until_done(slow["run_id"])
            bodies = {"good": good, "failing": failing, "slow": slow, "waiting": waiting}
            return {name: body["run_id"] for name, body in bodies.items()}

    ids = asyncio.run(scenario())
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name.endswith(".runs"))

    good = run_lines(caplog, ids["good"])
    assert len(good) == 3
    assert good[0] == f"run {ids['good']} queued: 3 nodes, position 0"
    assert good[1].startswith(f"run {ids['good']} started: 3 nodes planned, after ")
    assert good[2].startswith(f"run {ids['good']} finished in ")
    assert good[2].endswith("s: 3 nodes (3 ran, 0 cached)")

    failing = run_lines(caplog, ids["failing"])
    assert len(failing) == 3
    assert failing[2].startswith(f"run {ids['failing']} failed after ")
    assert failing[2].endswith("s (1 of 3 nodes done) in node 'f' (Fail): boom")

    waiting = run_lines(caplog, ids["waiting"])
    assert len(waiting) == 2  # queued, then cancelled before it ever started
    assert waiting[1].startswith(f"run {ids['waiting']} cancelled while queued, after ")

    slow = run_lines(caplog, ids["slow"])
    assert len(slow) == 3
    assert slow[2].startswith(f"run {ids['slow']} cancelled after ")
    assert slow[2].endswith("s (1 of 3 nodes done) in node 'w'")
