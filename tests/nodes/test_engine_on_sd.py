"""The engine's promises, on the real diffusion nodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sdgraphs import sd_graph

from nodeflow import events as ev
from nodeflow.errors import WorkflowInvalid
from nodeflow.validate import bind


def test_changing_only_the_seed_reruns_denoise_decode_and_save(make_executor):
    executor = make_executor()
    first = executor.run(sd_graph(seed=1, steps=2))
    assert first.ok and len(first.executed) == 9
    again = executor.run(sd_graph(seed=2, steps=2))
    assert again.executed == ["denoise", "decode", "save"]
    assert executor.run(sd_graph(seed=2, steps=2)).executed == []
    changed_prompt = executor.run(sd_graph(seed=2, steps=2, prompt="a blue square"))
    assert changed_prompt.executed == ["pos", "cfg", "denoise", "decode", "save"]


def test_an_interrupt_stops_denoise_within_one_step_and_the_next_run_works(make_executor):
    executor = make_executor()
    steps_seen: list[float] = []
    armed = [True]

    def interrupt_after_step_2(event):
        if isinstance(event, ev.NodeProgress) and event.node == "denoise":
            steps_seen.append(event.value)
            if armed[0] and event.value == 2:
                armed[0] = False
                executor.interrupt()

    executor.subscribe(interrupt_after_step_2)
    result = executor.run(sd_graph(steps=10))
    assert result.status == "cancelled"
    assert steps_seen == [1, 2]  # step 3 never started
    assert "decode" not in result.executed

    steps_seen.clear()
    assert executor.run(sd_graph(steps=10)).ok
    assert steps_seen == list(range(1, 11))


def test_previews_arrive_during_denoise(make_executor):
    executor = make_executor()
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    assert executor.run(sd_graph(steps=3, width=48, height=32)).ok
    previews = [e for e in seen if isinstance(e, ev.NodePreview)]
    assert [p.step for p in previews] == [1, 2, 3]
    assert all(p.node == "denoise" for p in previews)
    assert previews[0].image.size == (24, 16)  # latent resolution: the tiny VAE's factor is 2
    finished = next(
        i for i, e in enumerate(seen) if isinstance(e, ev.NodeFinished) and e.node == "denoise"
    )
    assert seen.index(previews[-1]) < finished


def test_no_previews_are_made_when_nobody_shows_them(make_executor):
    executor = make_executor(previews=False)
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    assert executor.run(sd_graph(steps=3)).ok
    assert [e for e in seen if isinstance(e, ev.NodePreview)] == []
    assert [e.value for e in seen if isinstance(e, ev.NodeProgress)] == [1, 2, 3]


def test_save_image_writes_numbered_pngs_with_the_workflow(make_executor, tmp_path):
    executor = make_executor()
    workflow = sd_graph(steps=2, batch_size=2)
    result = executor.run(workflow)
    files = result.outputs["save"]["files"]
    assert [p.rsplit("/", 1)[1] for p in files] == ["test_00001.png", "test_00002.png"]
    with Image.open(files[0]) as png:
        assert png.size == (64, 64)
        assert json.loads(png.text["workflow"]) == workflow.to_json()
    pixels = result.values.get("decode")  # not a target: freed or only cached
    assert pixels is None
    more = executor.run(sd_graph(steps=2, batch_size=2, seed=5)).outputs["save"]["files"]
    assert [p.rsplit("/", 1)[1] for p in more] == ["test_00003.png", "test_00004.png"]


def test_save_image_refuses_prefixes_outside_the_output_dir(make_executor):
    workflow = sd_graph(steps=1).with_values({("save", "prefix"): "../escape"})
    result = make_executor().run(workflow)
    assert result.status == "failed" and result.error.node == "save"
    assert "outside" in result.error.message


def test_load_image_fingerprints_its_file(make_executor, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(path)
    executor = make_executor()
    workflow = sd_graph(steps=2, image=str(path), strength=0.5)
    assert executor.run(workflow).ok
    assert executor.run(workflow).executed == []
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(path)
    assert executor.run(workflow).executed[:2] == ["load", "encode"]


def test_missing_files_are_refused_before_the_run_naming_the_folders(make_executor, models_dir):
    with pytest.raises(WorkflowInvalid) as raised:
        make_executor().run(sd_graph(steps=1, image="nope.png", checkpoint="not-there"))
    issues = {(i.node, i.input): i for i in raised.value.issues}
    assert {i.code for i in issues.values()} == {"file_not_found"}
    assert set(issues) == {("load", "path"), ("model", "path")}
    assert "no image 'nope.png'" in issues["load", "path"].message
    message = issues["model", "path"].message
    assert "no checkpoint 'not-there'" in message
    assert str(models_dir / "checkpoints") in message and "demo" in message


def test_a_file_gone_after_validation_fails_at_its_node(make_executor, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(path)
    executor = make_executor()
    bound = bind(
        sd_graph(steps=1, image=str(path), strength=0.5), executor.catalog, env=executor.env
    )
    path.unlink()
    result = executor.run(bound)
    assert result.status == "failed" and result.error.node == "load"
    assert f"no image {str(path)!r}" in result.error.message


def test_models_are_loaded_once_and_shared_across_nodes_and_runs(make_executor, runtime):
    make_executor().run(sd_graph(steps=1))
    loads = runtime.models.loads
    other = make_executor()  # a fresh output cache: LoadCheckpoint runs again
    result = other.run(sd_graph(steps=1, seed=3))
    assert "model" in result.executed
    assert runtime.models.loads == loads  # ...but the weights come from the model manager


@pytest.mark.parametrize(
    "bad, message",
    [
        ({("empty", "width"): 100}, "multiple of 8"),
        ({("sched", "name"): "dpm_fast"}, "Input should be"),
        ({("denoise", "strength"): 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_widget_values_are_caught_before_running(make_executor, bad, message):
    from nodeflow.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as info:
        make_executor().run(sd_graph(steps=1).with_values(bad))
    (issue,) = info.value.issues
    assert (issue.node, issue.input) == next(iter(bad)) and message in issue.message


def test_karras_on_a_scheduler_without_it_fails_clearly(make_executor):
    result = make_executor().run(sd_graph(steps=1, scheduler="ddim", karras=True))
    assert result.status == "failed" and result.error.node == "sched"
    assert "no Karras sigmas option" in result.error.message
