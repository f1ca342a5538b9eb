"""nodeflow-sweep on the demo model: upstream runs once, and every cell is the plain picture."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from nodeflow_sweep import sweeps, timings
from PIL import Image as PILImage

from nodeflow import events as ev
from nodeflow.cli import main
from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import load_catalog
from nodeflow.runtime import Runtime
from nodeflow.workflow import Workflow

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"
UPSTREAM = ["model", "pos", "neg", "sched", "empty"]


@pytest.fixture(scope="module")
def executor(tmp_path_factory) -> Executor:
    catalog = load_catalog()
    assert not catalog.failures, catalog.failures
    tmp = tmp_path_factory.mktemp("sweep")
    env = Environment.from_dirs(tmp / "models", tmp / "out", tmp / "in")
    return Executor(catalog, env=env, runtime=Runtime("cpu"), previews=False)


def test_numbers_are_parsed_and_checked_when_the_workflow_is_validated(executor):
    assert sweeps.parse_numbers("1, 3 7.5,15") == [1.0, 3.0, 7.5, 15.0]
    from nodeflow.validate import validate

    workflow = Workflow.load(WORKFLOWS / "cfg_sweep.json").with_values({("sweep", "scales"): "1,x"})
    (issue,) = validate(workflow, executor.catalog)[1]
    assert (issue.node, issue.input, issue.code) == ("sweep", "scales", "invalid_value")


def test_cfg_sweep_runs_upstream_once_and_each_cell_is_the_plain_cfg_picture(executor):
    started: Counter[str] = Counter()
    unsubscribe = executor.subscribe(
        lambda e: started.update([e.node]) if isinstance(e, ev.NodeStarted) else None
    )
    sweep = Workflow.load(WORKFLOWS / "cfg_sweep.json").with_values(
        {("sweep", "scales"): "1, 7.5", ("sched", "steps"): 2}
    )
    try:
        result = executor.run(sweep, targets=["decode", "save"])
    finally:
        unsubscribe()
    assert result.ok, result.error
    assert result.executed == [*result.executed[:5], "sweep", "decode", "grid", "save"]
    assert sorted(result.executed[:5]) == sorted(UPSTREAM)
    assert set(started.values()) == {1}  # every node, upstream included, ran exactly once
    batch = result.values["decode"]["image"].pixels
    assert batch.shape == (2, 64, 64, 3)

    (saved,) = result.outputs["save"]["files"]
    with PILImage.open(saved) as png:
        assert png.size[0] > 2 * 64 and png.size[1] > 64  # two cells side by side, labels above
        embedded = json.loads(png.text["workflow"])
    assert embedded["requires"]["sweep"]["distribution"] == "nodeflow-sweep"
    assert embedded["requires"]["imageops"]["distribution"] == "nodeflow-imageops"
    assert any(r["node"] == "sweep" for r in timings.RECENT)  # the plugin's event listener

    # another list of scales: only the sweep and what follows it run again
    more = sweep.with_values({("sweep", "scales"): "1, 7.5, 3"})
    again = executor.run(more, targets=["decode", "save"])
    assert again.executed == ["sweep", "decode", "grid", "save"]

    # the plain txt2img graph at scale 7.5 shares every upstream result and gives cell 2
    plain = Workflow.load(WORKFLOWS / "txt2img.json").with_values(
        {("sched", "steps"): 2, ("cfg", "scale"): 7.5, ("denoise", "seed"): 42}
    )
    single = executor.run(plain, targets=["decode"])
    assert single.executed == ["cfg", "denoise", "decode"]  # model, prompts, schedule: cached
    picture = single.values["decode"]["image"].pixels[0]
    assert torch.allclose(batch[1], picture, atol=1e-4)
    assert not torch.allclose(batch[0], picture, atol=1e-3)  # cfg 1 is another picture


def test_seed_sweep_cells_are_the_plain_seeded_pictures(executor):
    seeds = Workflow.load(WORKFLOWS / "seed_grid.json").with_values(
        {("sweep", "seeds"): "3, 5", ("sched", "steps"): 2}
    )
    result = executor.run(seeds, targets=["decode"])
    assert result.ok, result.error
    plain = Workflow.load(WORKFLOWS / "txt2img.json").with_values(
        {("sched", "steps"): 2, ("denoise", "seed"): 5}
    )
    single = executor.run(plain, targets=["decode"])
    batch = result.values["decode"]["image"].pixels
    assert torch.allclose(batch[1], single.values["decode"]["image"].pixels[0], atol=1e-4)


def test_prompt_sweep_encodes_each_line_and_each_cell_is_the_plain_prompt_picture(executor):
    prompts = [
        "a large red circle on a blue background",
        "two small white squares on a black background",
    ]
    grid = Workflow.load(WORKFLOWS / "prompt_grid.json").with_values(
        {("sweep", "prompts"): "\n" + "\n\n".join(prompts) + "\n", ("sched", "steps"): 2}
    )
    result = executor.run(grid, targets=["sweep", "decode"])
    assert result.ok, result.error
    assert result.values["sweep"]["labels"] == "\n".join(prompts)  # blank lines skipped
    batch = result.values["decode"]["image"].pixels
    assert batch.shape == (2, 64, 64, 3)
    for index, prompt in enumerate(prompts):
        plain = Workflow.load(WORKFLOWS / "txt2img.json").with_values(
            {("sched", "steps"): 2, ("pos", "text"): prompt, ("denoise", "seed"): 0}
        )
        single = executor.run(plain, targets=["decode"]).values["decode"]["image"].pixels[0]
        assert torch.allclose(batch[index], single, atol=1e-4), prompt
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)  # the prompt changed the picture

    empty = grid.with_values({("sweep", "prompts"): " \n\n"})
    failed = executor.run(empty, targets=["decode"])
    assert not failed.ok and failed.error.node == "sweep"
    assert "1 to 64 prompts" in str(failed.error.message)


def test_the_example_workflows_run_as_shipped_through_the_cli(tmp_path, capsys):
    for name in ("cfg_sweep.json", "seed_grid.json", "prompt_grid.json"):
        args = ["run", str(WORKFLOWS / name), "--output-dir", str(tmp_path), "--device", "cpu"]
        code = main([*args, "--quiet", "--set", "sched.steps=1"])
        assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "cfg_sweep_00001.png",
        "prompt_grid_00001.png",
        "seed_grid_00001.png",
    ]


def test_nodeflow_routes_serves_recent_sweeps():
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    timings.record(ev.NodeFinished("run1", "sw", "sweep.CFGSweep", seconds=1.5))
    timings.record(ev.NodeFinished("run1", "d", "VAEDecode", seconds=1.0))  # not a sweep
    response = asyncio.run(timings.recent(make_mocked_request("GET", "/api/plugins/sweep/recent")))
    first = json.loads(response.text)["sweeps"][0]
    assert first == {"run_id": "run1", "node": "sw", "node_type": "sweep.CFGSweep", "seconds": 1.5}
