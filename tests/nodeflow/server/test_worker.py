import threading
from typing import Any

import testnodes
from testnodes import make_workflow

from nodeflow import events as ev
from nodeflow.server.store import RunStore
from nodeflow.server.worker import Worker


def test_the_store_has_the_result_before_the_final_event_is_published(executor, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    seen_at_final: list[str] = []
    published: list[str] = []
    done = threading.Event()

    def publish(event):
        published.append(event.type)
        if isinstance(event, ev.RunFinished | ev.RunFailed):
            seen_at_final.append(store.get(event.run_id).status)
            done.set()

    worker = Worker(executor, store, publish=publish)
    workflow = make_workflow({"c": ("Constant", {"value": 1}), "o": ("Show", {"x": "@c.integer"})})
    store.submit(workflow.to_json())
    worker.start()
    worker.notify()
    assert done.wait(10)
    worker.stop()
    store.close()
    assert seen_at_final == ["finished"]
    assert published[0] == "run.started" and published[-1] == "run.finished"
    assert testnodes.CALLS == ["c", "o"]


def set_on(flag: threading.Event, event_type: str, node: str | None = None) -> Any:
    """A publish function that sets ``flag`` on the first ``event_type`` event (of ``node``)."""

    def publish(event: ev.Event) -> None:
        if event.type == event_type and node in (None, getattr(event, "node", None)):
            flag.set()

    return publish


SLOW_STEPS = {
    "c": ("Constant", {}),
    "w": ("Slow", {"x": "@c.integer", "steps": 1000, "delay": 0.01}),
    "o": ("Show", {"x": "@w.number"}),
}


def test_stopping_interrupts_the_running_run_and_records_it_interrupted(executor, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    progressing = threading.Event()
    worker = Worker(executor, store, publish=set_on(progressing, "node.progress"))
    record, _ = store.submit(make_workflow(SLOW_STEPS).to_json())
    worker.start()
    worker.notify()
    assert progressing.wait(10)
    assert worker.stop() is True
    run = store.get(record.run_id)
    store.close()
    assert run.status == "interrupted"  # not "cancelled": nobody cancelled it
    assert run.error["node"] == "w" and "stopped" in run.error["message"]


def test_stopping_gives_up_on_a_node_that_never_reaches_an_interrupt_point(executor, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    sleeping = threading.Event()
    worker = Worker(executor, store, publish=set_on(sleeping, "node.started", "w"))
    stuck = {**SLOW_STEPS, "w": ("Slow", {"x": "@c.integer", "steps": 1, "delay": 2.0})}
    record, _ = store.submit(make_workflow(stuck).to_json())
    worker.start()
    worker.notify()
    assert sleeping.wait(10)
    assert worker.stop(timeout=0.05) is False  # the process may exit: the run stays "running"
    assert store.get(record.run_id).status == "running"
    assert worker.stop(timeout=30) is True  # once the node returns, the run stops before "o"
    assert store.get(record.run_id).status == "interrupted"
    store.close()
