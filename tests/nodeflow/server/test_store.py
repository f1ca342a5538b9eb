"""The run store: queue order, state changes, history, and survival of a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeflow.server.store import INTERRUPTED_MESSAGE, SCHEMA_VERSION, RunRecord, RunStore

REPO = Path(__file__).resolve().parents[3]


def wf(n: int) -> dict[str, object]:
    return {"nodes": {"seed": {"type": "Int", "values": {"value": n}}}}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "runs.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[RunStore]:
    s = RunStore(db)
    yield s
    s.close()


def ids(records: list[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


def test_submit_returns_record_and_positions(store: RunStore) -> None:
    workflow = wf(1)
    rec, pos = store.submit(workflow, targets=["save"])
    assert pos == 0
    assert rec.status == "queued" and rec.targets == ["save"] and rec.workflow == workflow
    assert len(rec.run_id) == 32 and rec.started_at is None and rec.outputs == {}
    workflow["nodes"] = {}  # the caller's dict is not aliased by the record or the store
    assert rec.workflow == wf(1) and store.get(rec.run_id) == rec
    assert [store.submit(wf(i))[1] for i in range(3)] == [1, 2, 3]


def test_claim_is_fifo_and_front_runs_go_first_fifo_among_themselves(store: RunStore) -> None:
    a = store.submit(wf(0))[0].run_id
    b = store.submit(wf(1))[0].run_id
    f1, p1 = store.submit(wf(2), front=True)
    f2, p2 = store.submit(wf(3), front=True)
    c = store.submit(wf(4))[0].run_id
    assert (p1, p2) == (0, 1)  # f2 goes behind f1, not ahead of it
    order = [f1.run_id, f2.run_id, a, b, c]
    assert ids(store.queue()) == order
    assert [store.position(i) for i in order] == [0, 1, 2, 3, 4]

    first = store.claim_next()
    assert first is not None and first.run_id == f1.run_id
    assert first.status == "running" and first.started_at is not None
    assert store.position(f1.run_id) is None
    assert [store.position(i) for i in order[1:]] == [0, 1, 2, 3]

    assert store.cancel(a)
    assert store.position(a) is None and store.position(b) == 1 and store.position(c) == 2
    claimed = [store.claim_next() for _ in range(3)]
    assert [r.run_id for r in claimed if r] == [f2.run_id, b, c]
    assert store.claim_next() is None and store.queue() == []


def test_cancel_only_affects_queued_runs(store: RunStore) -> None:
    running = store.submit(wf(0))[0].run_id
    finished = store.submit(wf(1))[0].run_id
    queued = store.submit(wf(2))[0].run_id
    last = store.submit(wf(3))[0].run_id
    assert store.claim_next().run_id == running  # type: ignore[union-attr]
    assert store.claim_next().run_id == finished  # type: ignore[union-attr]
    store.finish(finished, "finished")
    before = {i: store.get(i) for i in (running, finished)}

    assert not store.cancel(running)
    assert not store.cancel(finished)
    assert not store.cancel("0" * 32)
    assert {i: store.get(i) for i in (running, finished)} == before
    assert store.cancel(queued)
    assert not store.cancel(queued)  # already cancelled
    cancelled = store.get(queued)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.finished_at is not None and cancelled.started_at is None
    # the cancelled run is skipped: claim hands out only the last queued run
    assert store.claim_next().run_id == last  # type: ignore[union-attr]
    assert store.claim_next() is None
    assert store.get(queued).status == "cancelled"  # type: ignore[union-attr]


def test_finish_records_everything(store: RunStore) -> None:
    ok = store.submit(wf(0))[0].run_id
    bad = store.submit(wf(1))[0].run_id
    store.claim_next()
    outputs = {"save": {"files": ["out/a.png"], "images": [{"width": 64}]}}
    t0 = time.time()
    store.finish(ok, "finished", outputs=outputs)
    store.claim_next()
    error = {"node": "f", "node_type": "Fail", "message": "boom", "traceback": "Traceback..."}
    store.finish(bad, "failed", error=error)

    rec = store.get(ok)
    assert rec is not None and rec.status == "finished" and rec.outputs == outputs
    assert rec.error is None and rec.finished_at is not None and rec.finished_at >= t0
    assert rec.started_at is not None and rec.started_at <= rec.finished_at
    failed = store.get(bad)
    assert failed is not None and failed.status == "failed" and failed.error == error
    assert failed.outputs == {}
    assert json.loads(json.dumps(failed.to_json())) == {
        "run_id": bad,
        "status": "failed",
        "workflow": wf(1),
        "targets": None,
        "submitted_at": failed.submitted_at,
        "started_at": failed.started_at,
        "finished_at": failed.finished_at,
        "outputs": {},
        "error": error,
    }


@pytest.mark.parametrize("status", ["queued", "running", "done", ""])
def test_finish_rejects_invalid_status(store: RunStore, status: str) -> None:
    run = store.submit(wf(0))[0].run_id
    with pytest.raises(ValueError, match="status"):
        store.finish(run, status)
    assert store.get(run).status == "queued"  # type: ignore[union-attr]


def test_finish_rejects_unknown_run(store: RunStore) -> None:
    with pytest.raises(ValueError, match="unknown run id"):
        store.finish("nope", "finished")
    assert store.get("nope") is None


def test_history_newest_first_filtered_and_limited(store: RunStore) -> None:
    runs = [store.submit(wf(i))[0].run_id for i in range(6)]
    for status in ["finished", "failed", "finished"]:
        claimed = store.claim_next()
        assert claimed is not None
        store.finish(claimed.run_id, status)
    assert ids(store.history()) == runs[::-1]
    assert ids(store.history(limit=2)) == runs[:3:-1]
    assert ids(store.history(status="finished")) == [runs[2], runs[0]]
    assert ids(store.history(status="finished", limit=1)) == [runs[2]]
    assert ids(store.history(status="queued")) == runs[:2:-1]
    assert store.history(status="interrupted") == []
    with pytest.raises(ValueError):
        store.history(status="bogus")


def test_reopen_keeps_everything_in_order(db: Path) -> None:
    store = RunStore(db)
    normal = [store.submit(wf(i), targets=[f"t{i}"])[0].run_id for i in range(4)]
    front = store.submit(wf(9), front=True)[0].run_id
    claimed = store.claim_next()
    assert claimed is not None and claimed.run_id == front
    store.finish(front, "finished", outputs={"save": {"files": ["x.png"]}})
    store.cancel(normal[1])
    before = store.history()
    store.close()

    reopened = RunStore(db)
    try:
        assert reopened.history() == before
        assert ids(reopened.queue()) == [normal[0], normal[2], normal[3]]
        assert reopened.get(normal[3]).targets == ["t3"]  # type: ignore[union-attr]
        assert reopened.recover() == []
        # new front submissions still go first; seq keeps growing, so new runs go last
        late = reopened.submit(wf(10))[0].run_id
        urgent = reopened.submit(wf(11), front=True)[0].run_id
        assert ids(reopened.queue()) == [urgent, normal[0], normal[2], normal[3], late]
    finally:
        reopened.close()


def test_schema_version_and_wal(db: Path) -> None:
    RunStore(db).close()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        con.commit()
    finally:
        con.close()
    with pytest.raises(RuntimeError, match="newer"):
        RunStore(db)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from nodeflow.server.store import RunStore

    store = RunStore(sys.argv[1])
    ids = [store.submit({"n": i})[0].run_id for i in range(20)]
    claimed = store.claim_next()
    print(json.dumps({"ids": ids, "claimed": claimed.run_id}))
    print("ready", flush=True)
    time.sleep(600)
    """
)

CHILD_STREAM = textwrap.dedent(
    """
    import sys
    from nodeflow.server.store import RunStore

    store = RunStore(sys.argv[1])
    i = 0
    while True:
        print(store.submit({"n": i})[0].run_id, flush=True)
        i += 1
    """
)


def spawn(script: str, db: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def sigkill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_loses_nothing_and_marks_running_run_interrupted(db: Path) -> None:
    child = spawn(CHILD, db)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        assert child.stdout.readline().strip() == "ready"
    finally:
        sigkill(child)
        child.stdout.close()  # type: ignore[union-attr]

    store = RunStore(db)
    try:
        assert info["claimed"] == info["ids"][0]
        assert store.get(info["claimed"]).status == "running"  # type: ignore[union-attr]
        assert store.recover() == [info["claimed"]]
        rec = store.get(info["claimed"])
        assert rec is not None and rec.status == "interrupted"
        assert rec.error == {"message": INTERRUPTED_MESSAGE}
        assert "stopped while" in INTERRUPTED_MESSAGE and rec.finished_at is not None
        assert ids(store.queue()) == info["ids"][1:]
        assert [r.workflow for r in store.queue()] == [{"n": i} for i in range(1, 20)]
        assert len(store.history(limit=1000)) == 20
        assert store.recover() == []  # idempotent
        assert store.claim_next().run_id == info["ids"][1]  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_submission_keeps_every_acknowledged_run(db: Path) -> None:
    """Kill a process that is submitting flat out: every id it got back is stored, in order."""
    child = spawn(CHILD_STREAM, db)
    acked: list[str] = []
    try:
        assert child.stdout is not None
        while len(acked) < 50:
            acked.append(child.stdout.readline().strip())
    finally:
        sigkill(child)
    acked.extend(line.strip() for line in child.stdout)  # type: ignore[union-attr]
    child.stdout.close()  # type: ignore[union-attr]

    store = RunStore(db)
    try:
        queued = ids(store.queue())
        assert queued[: len(acked)] == acked
        assert len(queued) - len(acked) <= 1  # at most the one committed but not yet printed
        assert store.recover() == []
    finally:
        store.close()


def test_threads_submit_while_a_worker_claims_and_finishes(store: RunStore) -> None:
    submitters, per_thread = 8, 50
    total = submitters * per_thread
    submitted: list[str] = []
    claimed: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(submitters + 1)

    def submit(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                rec, pos = store.submit(wf(t * 1000 + i))
                assert pos >= 0
                submitted.append(rec.run_id)
        except BaseException as exc:
            errors.append(exc)

    def work() -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while len(claimed) < total and time.monotonic() < deadline:
                run = store.claim_next()
                if run is None:
                    time.sleep(0.001)
                    continue
                assert run.status == "running"
                claimed.append(run.run_id)
                store.finish(run.run_id, "finished", outputs={"n": run.workflow})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(submitters)]
    threads.append(threading.Thread(target=work))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    assert len(submitted) == len(set(submitted)) == total
    assert Counter(claimed) == Counter(submitted)  # each run claimed exactly once
    finished = store.history(limit=total + 10, status="finished")
    assert sorted(ids(finished)) == sorted(submitted)
    assert store.queue() == [] and store.claim_next() is None


def test_queued_ids_are_the_queue_in_order_without_the_workflows(store):
    first, _ = store.submit({"n": 1})
    second, _ = store.submit({"n": 2})
    urgent, _ = store.submit({"n": 3}, front=True)
    store.claim_next()  # the urgent one
    assert store.queued_ids() == [r.run_id for r in store.queue()] == [first.run_id, second.run_id]
    assert urgent.run_id not in store.queued_ids()
