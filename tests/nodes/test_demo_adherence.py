"""Prompt adherence of the demo model in CI: fixed held-out captions and seeds, a floor.

The issue asks for "a test (fast, small N, fixed seeds) [that] asserts the adherence stays above a
floor, so a regression in any node shows up in CI". The floor test renders through the same
function as the benchmark (``nodes.demo.adherence``, used by
``tests/benchmarks/bench_adherence.py``) and through the same name users' workflows use,
``LoadCheckpoint path: "demo"``, so a broken text encoder, guidance, scheduler, sampler, decoder or
demo-model wiring lowers the score here.

The floor test runs on the shipped model (``nodes/demo/model/``, package data); the plumbing
test below runs on a micro model the trainer makes in a few seconds, so the shared
generate-and-score code is also checked on a model other than the one whose figures it reports.
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import pytest

from nodes.demo.adherence import (
    CHECKS,
    DEFAULT_CFG,
    AdherenceRunner,
    adherence_workflow,
    held_out_scenes,
    summarize,
)
from nodes.demo.dataset import Scene, caption, is_held_out
from nodes.demo.scene_mix import sample_mixed_scene

CI_CAPTIONS = 16
CI_SEED = 0
FLOORS = {"color_ok": 14 / 16, "background_ok": 14 / 16, "caption_ok": 9 / 16}
"""The shipped model, demo v2b (2026-11-30), scores 16/16 shape color, 16/16 background and
11/16 whole captions on these 16 captions at CFG 7.5 (95.5%, 100% and 57.5% on the benchmark's
200): two captions of margin each. The U-Net before it (v1, same decoder) scored 13/16, 16/16 and
8/16, under the colour and whole-caption floors. The whole caption needs the shape, count and
size too, so a broken decoder or text path shows here even when the colours survive. A broken
node falls to chance (about 1/8 per color, near 0 whole captions), far below."""


POSITIONED_CAPTIONS = 40
POSITION_FLOORS = {"position_ok": 16 / 40, "caption_ok": 12 / 40}
"""Only about one held-out caption in six names a position, too few among the 16 above, so
position has its own set: 40 held-out captions that all name one (the set ``train_grow``'s
evaluations call "positioned"), CFG 7.5. demo v2b (shipped 2026-11-30) places 19/40 where the
caption says and gets 15/40 whole captions right; v1, the U-Net before it, 12/40 and 6/40 (chance
is 1/5 for position). Three captions of margin each, so v1 fails both floors."""


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro-architecture demo model from the real trainer (``--micro``, two steps per stage):
    its pictures are noise, but its folder is exactly what ``train_demo`` ships."""
    import torch

    trainer = importlib.import_module("nodes.demo.train_demo")
    out = tmp_path_factory.mktemp("demo-micro") / "model"
    steps = ["--steps", "2", "--vae-steps", "2", "--batch-size", "2", "--vae-batch-size", "2"]
    quiet = ["--eval-samples", "0", "--device", "cpu", "--threads", "1", "--log-every", "1000"]
    trainer.main(["--out", str(out), "--micro", *steps, *quiet])
    torch.set_num_threads(1)
    return out


def test_held_out_scenes_are_fixed_and_held_out() -> None:
    scenes = held_out_scenes(20, seed=CI_SEED)
    assert scenes == held_out_scenes(20, seed=CI_SEED)
    assert scenes != held_out_scenes(20, seed=CI_SEED + 1)
    assert all(is_held_out(s) and s.style == "plain" for s in scenes)


def test_workflow_is_the_standard_graph() -> None:
    plain = adherence_workflow("a red circle", model="demo", cfg=2.0, seed=3).to_json()["nodes"]
    assert {k: v["type"] for k, v in plain.items()} == {
        "model": "LoadCheckpoint",
        "pos": "TextEncode",
        "neg": "TextEncode",
        "sched": "Scheduler",
        "cfg": "CFG",
        "empty": "EmptyLatent",
        "denoise": "Denoise",
        "decode": "VAEDecode",
    }
    assert plain["neg"]["inputs"]["text"] == ""
    assert plain["cfg"]["inputs"]["scale"] == 2.0 and plain["denoise"]["inputs"]["seed"] == 3
    assert "rescale" not in plain["cfg"]["inputs"]  # graphs measured before it stay the same
    rescaled = adherence_workflow("a red circle", model="demo", rescale=0.7).to_json()["nodes"]
    assert rescaled["cfg"]["inputs"]["rescale"] == 0.7
    styled = adherence_workflow("a red circle", model="demo", lora="/x.safetensors", strength=0.5)
    nodes = styled.to_json()["nodes"]
    assert nodes["lora"]["type"] == "LoadLoRA"
    assert nodes["lora"]["inputs"]["strength_unet"] == 0.5
    assert nodes["sched"]["inputs"]["unet"] == {"from": "lora.unet"}
    assert nodes["pos"]["inputs"]["text_encoder"] == {"from": "lora.text_encoder"}


def test_generate_and_score_on_micro_model(micro_model: Path) -> None:
    scenes = held_out_scenes(2, seed=CI_SEED)
    runner = AdherenceRunner(str(micro_model))
    try:
        samples = runner.run(scenes, cfg=DEFAULT_CFG, seed=CI_SEED, per_caption=2)
        assert runner.resolved_model() == micro_model
    finally:
        runner.close()
    assert runner.pictures == 4
    assert [(s.caption, s.seed, s.batch_index) for s in samples] == [
        (caption(scenes[0]), CI_SEED, 0),
        (caption(scenes[0]), CI_SEED, 1),
        (caption(scenes[1]), CI_SEED + 1, 0),
        (caption(scenes[1]), CI_SEED + 1, 1),
    ]
    for sample in samples:
        assert sample.cfg == DEFAULT_CFG and sample.strength is None
        assert all(sample.result[c] in (True, False, None) for c in CHECKS)
        assert sample.result["position_ok"] is None or sample.scene.position is not None
        assert 0.0 <= sample.result["outline_score"] <= 1.0
    summary = summarize(samples)
    assert summary["pictures"] == 4
    assert set(summary) == {"pictures", "outline_score", *CHECKS}
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in summary.items() if k != "pictures")


def _assert_floors(scenes: list[Scene], floors: dict[str, float], which: str) -> None:
    """Draw ``scenes`` with the shipped model at the benchmark's CFG and hold each check to its
    floor, naming the captions that failed it."""
    import torch

    torch.set_num_threads(1)
    runner = AdherenceRunner("demo")
    try:
        resolved = runner.resolved_model()
        samples = runner.run(scenes, cfg=DEFAULT_CFG, seed=CI_SEED)
    finally:
        runner.close()
    summary = summarize(samples)
    for check, floor in floors.items():
        value = summary[check]
        failed = [s.caption for s in samples if not s.result[check]]
        assert value is not None and value >= floor, (
            f"{check} {value:.0%} is below the {floor:.0%} floor on {len(scenes)} {which} at "
            f"CFG {DEFAULT_CFG} ('demo' resolved to {resolved}); failed: {failed}"
        )


def test_shipped_demo_model_adherence_floor() -> None:
    _assert_floors(held_out_scenes(CI_CAPTIONS, seed=CI_SEED), FLOORS, "held-out captions")


def positioned_scenes(n: int, seed: int = CI_SEED) -> list[Scene]:
    """``n`` held-out scenes that all name a position, as ``train_grow.evaluate_folder`` draws
    them (its ``random.Random(seed + 1)`` stream)."""
    rng = random.Random(seed + 1)
    return [sample_mixed_scene(rng, 1.0, split="held_out") for _ in range(n)]


def test_shipped_demo_model_places_shapes_where_the_caption_says() -> None:
    scenes = positioned_scenes(POSITIONED_CAPTIONS)
    assert all(s.position is not None and is_held_out(s) for s in scenes)
    _assert_floors(scenes, POSITION_FLOORS, "held-out captions naming a position")
