"""The VRAM budget on a real graph: models offloaded least recently used first, pixels unchanged.

This machine has no GPU, so the budget is simulated (the compute and offload devices are both
the CPU); the manager's own record of where each model is makes the policy observable.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sdgraphs import sd_graph

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.runtime import Runtime
from nodeflow.runtime.models import module_nbytes


def _run(sd_catalog, runtime: Runtime, models_dir: Path, tmp_path: Path) -> tuple[Any, Any]:
    """The picture, and the loaded model parts."""
    env = Environment.from_dirs(models_dir, tmp_path / "out", tmp_path / "in")
    result = Executor(sd_catalog, env=env, runtime=runtime).run(
        sd_graph(save=False, steps=2), targets=["decode", "model"]
    )
    assert result.ok, result.error and result.error.traceback
    model = result.values["model"]
    parts = SimpleNamespace(**model)
    return result.values["decode"]["image"].pixels.numpy(), parts


def test_a_budget_for_two_of_three_models_offloads_the_least_recently_used(
    sd_catalog, models_dir: Path, tmp_path: Path
) -> None:
    expected, parts = _run(sd_catalog, Runtime("cpu"), models_dir, tmp_path)
    sizes = {
        "text_encoder": module_nbytes(parts.text_encoder.model),
        "unet": module_nbytes(parts.unet.model),
        "vae": module_nbytes(parts.vae.model),
    }
    # The graph uses the text encoder, then the U-Net, then the VAE. A budget that holds the
    # two largest but not all three must push the text encoder out when the VAE comes in.
    budget = sizes["text_encoder"] + sizes["unet"]
    assert budget < sum(sizes.values()) and sizes["vae"] + sizes["unet"] <= budget

    limited = Runtime("cpu", vram_budget=budget)
    actual, parts = _run(sd_catalog, limited, models_dir, tmp_path)
    manager = limited.models
    # On the CPU, loading a model already puts it "on the device", so all three start resident
    # (over budget) and the first use makes room: the VAE, registered last, is the least
    # recently used. Then the VAE comes back for decoding and pushes out the text encoder.
    assert [e for e in manager.events if e[0] == "offload"] == [
        ("offload", "VAE of tiny"),
        ("offload", "text encoder of tiny"),
    ]
    assert manager.resident() == [parts.unet.model, parts.vae.model]
    assert np.array_equal(actual, expected)

    # Change the prompt so the text encoder runs again: it comes back, and the U-Net, now the
    # least recently used, makes room; the VAE stays.
    env = Environment.from_dirs(models_dir, tmp_path / "out", tmp_path / "in")
    result = Executor(sd_catalog, env=env, runtime=limited).run(
        sd_graph(save=False, steps=2, prompt="another prompt"), targets=["pos"]
    )
    assert result.ok
    assert [e for e in manager.events if e[0] == "offload"][2:] == [("offload", "U-Net of tiny")]
    assert manager.resident() == [parts.vae.model, parts.text_encoder.model]
