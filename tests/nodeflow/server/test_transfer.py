"""Files to and from workers without a shared disk, and the worker half of a Ray actor, in process
(no Ray needed)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testnodes
import testnodes
from testnodes import make_workflow

from nodeflow import events as ev
from nodeflow.server.remote_worker import RemoteWorker
from nodeflow.server.transfer import OutputFolder, Placer, input_files, write_inputs


def test_a_taken_name_gets_the_next_free_counter_and_reports_follow(tmp_path):
    placer = Placer(tmp_path / "out")
    first, second = {}, {}
    placer.place({"pics/a_00001.png": b"one"}, first)
    placer.place({"pics/a_00001.png": b"two", "plain.txt": b"x"}, second)
    placer.place({"plain.txt": b"y"}, first)
    assert first == {"pics/a_00001.png": "pics/a_00001.png", "plain.txt": "plain_1.txt"}
    assert second["pics/a_00001.png"] == "pics/a_00002.png"
    assert (tmp_path / "out/pics/a_00002.png").read_bytes() == b"two"
    assert (tmp_path / "out/plain_1.txt").read_bytes() == b"y"
    report = {
        "images": [{"filename": "a_00001.png", "subfolder": "pics", "type": "output"}],
        "files": ["/w/out/pics/a_00001.png", "/elsewhere/b.png"],
        "other": 1,
    }
    renamed = placer.report(report, second, "/w/out")
    assert renamed["images"] == [{"filename": "a_00002.png", "subfolder": "pics", "type": "output"}]
    assert renamed["files"] == [
        str((tmp_path / "out/pics/a_00002.png").resolve()),
        "/elsewhere/b.png",
    ]
    assert renamed["other"] == 1 and report["images"][0]["filename"] == "a_00001.png"


def test_a_worker_sends_each_new_file_once_and_keeps_its_name_counting(tmp_path):
    folder = OutputFolder(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/a.png").write_bytes(b"png")
    assert folder.new_files() == {"sub/a.png": b"png"}
    assert folder.new_files() == {}
    assert (tmp_path / "sub/a.png").exists()  # emptied, not removed: counters keep counting
    (tmp_path / "b.txt").write_text("b")
    assert folder.new_files() == {"b.txt": b"b"}


def test_input_files_named_by_a_workflow_travel_with_their_times(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "n.txt").write_text("5")
    os.utime(inputs / "n.txt", ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "secret.txt").write_text("no")
    workflow = {
        "nodes": {
            "a": {"type": "X", "inputs": {"path": "n.txt", "text": "a prompt", "n": 3}},
            "b": {"type": "X", "inputs": {"path": "../secret.txt", "link": {"from": "a.x"}}},
        }
    }
    files = input_files(workflow, inputs)
    assert files == {"n.txt": (b"5", 1_000_000_000)}
    worker = tmp_path / "worker"
    write_inputs(worker, {**files, "../escape.txt": (b"x", 1)})
    assert (worker / "n.txt").read_text() == "5"
    assert (worker / "n.txt").stat().st_mtime_ns == 1_000_000_000
    assert not (tmp_path / "escape.txt").exists()


def flat(batches) -> list:
    return [item for batch in batches for item in batch]


def test_the_worker_streams_events_with_files_before_their_node_finishes(tmp_path):
    worker = RemoteWorker(testnodes.catalog, str(tmp_path / "models"))
    nodes = {"c": ("Constant", {"value": 2}), "o": ("Mark", {"x": "@c.integer"})}
    items = flat(worker.run("r1", make_workflow(nodes).to_json(), None, {}))
    kinds = [k if k != "event" else v.type for k, v in items]
    assert kinds[0] == "run.started" and kinds[-2:] == ["run.finished", "result"]
    assert kinds[kinds.index("files") + 1] == "node.finished"  # Mark's, after Constant's
    (files,) = [v for k, v in items if k == "files"]
    assert files == {"marks/mark_00001.txt": b"r1 2"}
    result = items[-1][1]
    assert result["status"] == "finished" and result["executed"] == ["c", "o"]
    assert worker.ready()["output_dir"] != str(tmp_path)
    worker.close()
    assert not worker.root.exists()


def test_an_interrupt_that_arrives_before_its_run_starts_still_stops_it(tmp_path):
    worker = RemoteWorker(testnodes.catalog, str(tmp_path / "models"))
    assert worker.interrupt("r2") is False  # not running yet: remembered
    nodes = {
        "c": ("Constant", {}),
        "s": ("Sleep", {"x": "@c.integer", "seconds": 30}),
        "o": ("Show", {"x": "@s.number"}),
    }
    items = flat(worker.run("r2", make_workflow(nodes).to_json(), None, {}))
    assert items[-1][1]["status"] == "cancelled"
    assert isinstance(items[-2][1], ev.RunCancelled)
    # and a running one is stopped by id
    stream = (
        i for batch in worker.run("r3", make_workflow(nodes).to_json(), None, {}) for i in batch
    )
    started = threading.Event()
    for kind, value in stream:
        if kind == "event" and isinstance(value, ev.NodeStarted) and value.node == "s":
            started.set()
            assert worker.interrupt("r3") is True
        if kind == "result":
            assert value["status"] == "cancelled"
    assert started.is_set()
    worker.close()
