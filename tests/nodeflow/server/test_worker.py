import threading

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
