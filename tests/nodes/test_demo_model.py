"""The shipped demo model: what ``path: "demo"`` means, what ships, and that diffusers agrees.

The adherence floor (``test_demo_adherence.py``) shows the model draws what it is told; these
tests pin down the packaging: names resolve to package data with no models dir, the files are
safetensors of the sizes and dtypes the model card states, the single file is the same model as
the folder, and the trained weights give diffusers' own pipeline's pixels through nodeflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pixels import assert_same_pixels
from safetensors import safe_open
from sdgraphs import sd_graph

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodes.loaders import BUILT_IN, DEMO, DEMO_FILE, SHIPPED, demo_lora, resolve_checkpoint
from nodes.lora import resolve_lora_path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "nodes" / "demo" / "model" / "demo-sd"
MAX_MODEL_MB = 40
"""Each shipped model (its folder and its single file, sharing the model's stem) stays under this:
issue 22's budget for the U-Net demo, and the package carries several such models."""
MAX_TOTAL_MB = 100
"""All of ``nodes/demo/model/`` together: what every install of the package carries."""


@pytest.fixture
def executor(sd_catalog, runtime, tmp_path) -> Executor:
    """An executor whose models dir is empty, so every name below is the built-in one."""
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "output", tmp_path / "input")
    return Executor(sd_catalog, env=env, runtime=runtime)


def test_demo_names_resolve_to_the_package_data_with_an_empty_models_dir(tmp_path) -> None:
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    assert FOLDER.parent == SHIPPED  # the package folder, not a copy in nodeflow's home
    assert resolve_checkpoint(DEMO, env) == FOLDER
    assert resolve_checkpoint(DEMO_FILE, env) == FOLDER.with_suffix(".safetensors")
    assert resolve_lora_path("demo-style", env) == demo_lora() == SHIPPED / "demo-style.safetensors"

    mine = tmp_path / "models" / "checkpoints" / DEMO  # a user's model of that name wins
    mine.mkdir(parents=True)
    assert resolve_checkpoint(DEMO, env) == mine


def _dtypes(path: Path) -> set[str]:
    with safe_open(path, "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118


def test_shipped_files_are_small_safetensors_with_a_model_card() -> None:
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files) / 1e6
    assert total < MAX_TOTAL_MB, f"the shipped demo models are {total:.1f} MB"
    per_model: dict[str, float] = {}
    for p in files:
        stem = p.relative_to(SHIPPED).parts[0].split(".")[0]
        per_model[stem] = per_model.get(stem, 0.0) + p.stat().st_size / 1e6
    too_big = {stem: round(mb, 1) for stem, mb in per_model.items() if mb >= MAX_MODEL_MB}
    assert not too_big, f"shipped models over {MAX_MODEL_MB} MB: {too_big}"
    weights = {p.suffix for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl")}
    assert not weights, f"pickled weights shipped: {weights}"
    assert _dtypes(FOLDER / "unet" / "diffusion_pytorch_model.safetensors") == {"F16"}
    assert _dtypes(FOLDER / "text_encoder" / "model.safetensors") == {"F16"}
    assert _dtypes(FOLDER / "vae" / "diffusion_pytorch_model.safetensors") == {"F32"}

    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    for fact in ("python -m nodes.demo.train_demo", "python -m nodes.demo.train_lora",
                 "seed", "steps", "minutes", "License", "dataset"):  # fmt: skip
        assert fact in card, fact
    summary = json.loads((FOLDER / "training_summary.json").read_text())
    assert summary["args"]["seed"] == "0" and summary["minutes"] > 0


def _image(executor: Executor, checkpoint: str, **settings) -> np.ndarray:
    graph = sd_graph(save=False, checkpoint=checkpoint, **settings)
    result = executor.run(graph, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def test_the_single_file_is_the_folder(executor) -> None:
    settings = {"prompt": "a large red circle on a blue background", "steps": 4, "seed": 3}
    folder = _image(executor, DEMO, **settings)
    single = _image(executor, DEMO_FILE, **settings)
    assert folder.shape == (1, 64, 64, 3)
    assert_same_pixels(single, folder)


def test_the_trained_model_gives_the_diffusers_pipelines_pixels(executor) -> None:
    """The oracle on the real weights (fp16 on disk, fp32 on the CPU) rather than random ones."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        BUILT_IN[DEMO], local_files_only=True, safety_checker=None, torch_dtype=torch.float32
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompt, seed, steps = "two small yellow squares on a black background", 11, 6
    expected = pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=7.5,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images
    ours = _image(executor, DEMO, prompt=prompt, seed=seed, steps=steps, scheduler="euler")
    assert np.abs(ours - expected).max() <= 1e-4
    assert ours.std() > 0.05  # a picture, not a flat field
