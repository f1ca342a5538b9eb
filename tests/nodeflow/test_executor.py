import gc
import threading

import pytest
import testnodes
from testnodes import make_workflow

from nodeflow import events as ev
from nodeflow.context import Environment
from nodeflow.errors import WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.validate import bind

CHAIN = {
    "c": ("Constant", {"value": 3}),
    "s": ("Scale", {"x": "@c.integer", "factor": 2}),
    "a": ("Add", {"a": "@s.number", "b": "@c.integer"}),
    "o": ("Show", {"x": "@a.number"}),
    "side": ("Scale", {"x": "@c.integer"}),
    "o2": ("Show", {"x": "@side.number", "title": "side"}),
    "unused": ("Scale", {"x": "@c.integer", "factor": 3}),
}


def test_a_run_executes_the_plan_and_reports_outputs(executor, calls):
    result = executor.run(make_workflow(CHAIN))
    assert result.ok
    assert result.outputs == {
        "o": {"value": 9.0, "title": ""},
        "o2": {"value": 3.0, "title": "side"},
    }
    assert sorted(calls) == sorted(["c", "s", "a", "o", "side", "o2"])  # "unused" never runs
    assert result.executed == calls


def test_an_unchanged_rerun_runs_nothing_and_still_reports(executor, calls):
    first = executor.run(make_workflow(CHAIN))
    calls.clear()
    again = executor.run(make_workflow(CHAIN))
    assert calls == [] and again.executed == []
    assert sorted(again.cached) == sorted(first.executed)
    assert again.outputs == first.outputs


def test_a_changed_widget_reruns_exactly_that_node_and_its_descendants(executor, calls):
    executor.run(make_workflow(CHAIN))
    calls.clear()
    changed = dict(CHAIN, s=("Scale", {"x": "@c.integer", "factor": 2.5}))
    result = executor.run(make_workflow(changed))
    assert sorted(calls) == ["a", "o", "s"]
    assert result.outputs["o"]["value"] == 10.5
    calls.clear()
    root = dict(changed, c=("Constant", {"value": 4}))
    executor.run(make_workflow(root))
    assert sorted(calls) == sorted(["c", "s", "a", "o", "side", "o2"])


def test_node_ids_do_not_matter_to_the_cache(executor, calls):
    executor.run(
        make_workflow({"c": ("Constant", {"value": 1}), "o": ("Show", {"x": "@c.integer"})})
    )
    calls.clear()
    renamed = {"k": ("Constant", {"value": 1}), "out": ("Show", {"x": "@k.integer"})}
    assert executor.run(make_workflow(renamed)).outputs == {"out": {"value": 1, "title": ""}}
    assert calls == []


def test_events_arrive_in_order(executor):
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": 2}),
            "w": ("Slow", {"x": "@c.integer", "steps": 2}),
            "o": ("Show", {"x": "@w.number"}),
        }
    )
    result = executor.run(workflow, run_id="r1")
    assert [(e.type, getattr(e, "node", None)) for e in seen] == [
        ("run.started", None),
        ("node.started", "c"),
        ("node.finished", "c"),
        ("node.started", "w"),
        ("node.progress", "w"),
        ("node.progress", "w"),
        ("node.finished", "w"),
        ("node.started", "o"),
        ("node.finished", "o"),
        ("run.finished", None),
    ]
    assert all(e.run_id == "r1" for e in seen)
    assert [(e.value, e.max) for e in seen if isinstance(e, ev.NodeProgress)] == [(1, 2), (2, 2)]
    assert seen[0].nodes == ["c", "w", "o"]
    assert seen[-2].report == {"value": 2.0, "title": ""}
    assert seen[-1].executed == ["c", "w", "o"] and result.seconds > 0

    seen.clear()
    executor.run(dict_to(workflow, ("w", "steps"), 3), run_id="r2")
    assert [(e.type, getattr(e, "node", None)) for e in seen][:3] == [
        ("run.started", None),
        ("node.cached", "c"),
        ("node.started", "w"),
    ]
    assert seen[-1].cached == ["c"]


def dict_to(workflow, where, value):
    return workflow.with_values({where: value})


def test_a_node_error_names_the_node_and_leaves_the_executor_usable(executor, calls):
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    bad = make_workflow(
        {
            "c": ("Constant", {"value": 1}),
            "f": ("Fail", {"x": "@c.integer", "message": "kaput"}),
            "o": ("Show", {"x": "@f.number"}),
        }
    )
    result = executor.run(bad)
    assert result.status == "failed"
    assert [e.type for e in seen][-2:] == ["node.error", "run.failed"]
    error = seen[-2]
    assert (error.node, error.node_type, error.exception_type, error.message) == (
        "f",
        "Fail",
        "RuntimeError",
        "kaput",
    )
    assert "raise RuntimeError(message)" in error.traceback
    assert result.error == error and seen[-1].node == "f"
    calls.clear()
    good = make_workflow({"c": ("Constant", {"value": 1}), "o": ("Show", {"x": "@c.integer"})})
    assert executor.run(good).ok
    assert calls == ["o"]  # the Constant from the failed run was cached


def test_an_interrupt_mid_run_cancels_and_the_next_run_works(executor, calls):
    seen: list[ev.Event] = []
    armed = [True]

    def interrupt_at_step_3(event):
        seen.append(event)
        if armed[0] and isinstance(event, ev.NodeProgress) and event.value == 3:
            armed[0] = False
            executor.interrupt()

    executor.subscribe(interrupt_at_step_3)
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": 1}),
            "w": ("Slow", {"x": "@c.integer", "steps": 100}),
            "o": ("Show", {"x": "@w.number"}),
        }
    )
    result = executor.run(workflow)
    assert result.status == "cancelled"
    assert seen[-1] == ev.RunCancelled(result.run_id, node="w")
    progress = [e.value for e in seen if isinstance(e, ev.NodeProgress)]
    assert progress == [1, 2, 3]  # stopped at the very next interrupt point
    assert "o" not in calls

    seen.clear()
    again = executor.run(workflow)
    assert again.ok and seen[-1].type == "run.finished"
    assert [e.value for e in seen if isinstance(e, ev.NodeProgress)][-1] == 100


def test_an_interrupt_from_another_thread_stops_between_nodes(executor):
    started = threading.Event()
    executor.subscribe(lambda e: started.set() if e.type == "node.progress" else None)
    workflow = make_workflow(
        {
            "c": ("Constant", {}),
            "w": ("Slow", {"x": "@c.integer", "steps": 500, "delay": 0.01}),
            "o": ("Show", {"x": "@w.number"}),
        }
    )
    thread = threading.Thread(target=lambda: (started.wait(5), executor.interrupt()))
    thread.start()
    result = executor.run(workflow)
    thread.join()
    assert result.status == "cancelled"


def test_never_cached_nodes_and_their_descendants_always_run(executor, calls):
    workflow = make_workflow({"v": ("Volatile", {}), "o": ("Show", {"x": "@v.integer"})})
    executor.run(workflow)
    executor.run(workflow)
    assert calls == ["v", "o", "v", "o"]


def test_a_fingerprinted_node_reruns_when_its_file_changes(executor, calls, tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("1.5")
    workflow = make_workflow(
        {"r": ("ReadNumber", {"path": str(path)}), "o": ("Show", {"x": "@r.number"})}
    )
    assert executor.run(workflow).outputs["o"]["value"] == 1.5
    assert executor.run(workflow).executed == []
    path.write_text("2.25")
    assert executor.run(workflow).outputs["o"]["value"] == 2.25
    bound = bind(workflow, executor.catalog, env=executor.env)
    path.unlink()
    failed = executor.run(bound)  # validated while the file was there: fails at its node
    assert failed.status == "failed" and failed.error.node == "r"
    assert "No such file" in failed.error.message
    with pytest.raises(WorkflowInvalid, match="no number file"):  # validated now: refused
        executor.run(workflow)


def test_targets_run_only_what_they_need_and_return_values(executor, calls):
    result = executor.run(make_workflow(CHAIN), targets=["s"])
    assert calls == ["c", "s"]
    assert result.values["s"]["number"].value == 6
    assert result.outputs == {}


def test_linked_widget_values_are_validated_when_they_arrive(executor):
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": 999}),
            "i": ("ToInt", {"x": "@c.integer"}),
            "s": ("Scale", {"x": "@c.integer", "factor": "@i.int"}),
            "o": ("Show", {"x": "@s.number"}),
        }
    )
    result = executor.run(workflow)
    assert result.status == "failed" and result.error.node == "s"
    assert (
        "input 'factor'" in result.error.message
        and "less than or equal to 10" in result.error.message
    )


def test_invalid_workflows_raise_before_anything_runs(executor, calls):
    with pytest.raises(WorkflowInvalid) as info:
        executor.run(make_workflow({"o": ("Show", {})}))
    assert [(i.node, i.input, i.code) for i in info.value.issues] == [("o", "x", "missing_input")]
    assert calls == []


def test_with_the_cache_off_intermediates_are_freed_early(catalog, calls, tmp_path):
    executor = Executor(
        catalog, env=Environment.from_dirs(tmp_path, tmp_path, tmp_path), cache_bytes=0
    )
    alive: dict[str, bool] = {}

    def when_the_last_node_starts(event):
        if isinstance(event, ev.NodeStarted) and event.node == "o":
            gc.collect()
            alive.update({node: ref() is not None for node, ref in testnodes.MADE.items()})

    executor.subscribe(when_the_last_node_starts)
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": 2}),
            "s1": ("Scale", {"x": "@c.integer"}),
            "s2": ("Scale", {"x": "@s1.number"}),
            "o": ("Show", {"x": "@s2.number"}),
        }
    )
    assert executor.run(workflow).outputs["o"]["value"] == 2
    # "c" and "s1" have no consumers left when "o" starts; "s2" feeds it
    assert alive == {"c": False, "s1": False, "s2": True}
    assert len(executor.cache) == 0 and executor.run(workflow).executed == ["c", "s1", "s2", "o"]


def test_a_broken_subscriber_does_not_break_the_run(executor):
    def broken(event):
        raise RuntimeError("observer bug")

    executor.subscribe(broken)
    assert executor.run(make_workflow(CHAIN)).ok
