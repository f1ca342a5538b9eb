"""The shipped ``demo-lcm`` LoRA in CI: 4 steps of the ``lcm`` scheduler at guidance 1 on fixed
held-out captions keep a floor, and beat the base demo model's own 4 Euler steps; at 2 steps the
LoRA beats the same sampler without it (the v2b U-Net with the ``lcm`` scheduler alone already
reads 12 of these 16 captions right in 4 steps, so the 4-step checks would pass without the LoRA).

Rendered through ``nodes.demo.adherence`` (the graph ``tests/benchmarks/bench_few_step.py``
measures) and the name users' workflows use, ``LoadLoRA path: "demo-lcm"``, so a regression in
the LoRA file, its loading or fusing, the ``lcm`` scheduler or the one-pass guidance path lowers
the score here.
"""

from __future__ import annotations

from typing import Any

from nodes.demo.adherence import DEFAULT_CFG, AdherenceRunner, held_out_scenes, summarize
from nodes.loaders import DEMO_LCM_LORA

CI_CAPTIONS = 16
CI_SEED = 0
STEPS = 4
FLOORS = {"caption_ok": 11 / 16, "color_ok": 14 / 16, "background_ok": 14 / 16}
"""The shipped LoRA (distilled from the v2b U-Net: the mean of the step-300 to 600 saves,
2026-11-30 09:15) scores 13/16 whole captions, 16/16 shape color and 16/16 background on these
captions (the base model in 4 Euler steps: 1/16, 11/16, 13/16): two captions of margin each; the
caption floor, 69%, is also its rate on the 200 captions of BENCHMARKS.md ("Few-step sampling",
69.5%). The LoRA distilled from the old U-Net, on the new U-Net, scores 11/16, 14/16, 16/16 here:
exactly at these floors, and the U-Net with the ``lcm`` scheduler and no LoRA 12/16, 14/16,
16/16: these floors catch a regression of the sampler or of the pictures, not a LoRA that is
stale or not applied; ``LORA_LEAD`` below is what catches those."""
LEAD = 8 / 16
"""demo-lcm leads the base's 4 steps by 12 whole captions here (on the 200 captions by 60.5
points, 9.7 of 16); the test asks for eight."""
LORA_STEPS = 2
LORA_LEAD = 4 / 16
"""At 2 ``lcm`` steps, guidance 1: the LoRA 12/16 whole captions, the same sampler without it
6/16 (lead 6; on the 200 captions of BENCHMARKS.md's "Few-step sampling" 62.0% against 25.5%,
36.5 points, 5.8 of 16); the test asks for four, two captions of margin as the floors. The LoRA
distilled from the old U-Net scores 9/16 here (lead 3) and would fail, by one caption."""


def _summary(runner: AdherenceRunner, cfg: float, strength: float | None) -> dict[str, Any]:
    scenes = held_out_scenes(CI_CAPTIONS, seed=CI_SEED)
    try:
        samples = runner.run(scenes, cfg=cfg, seed=CI_SEED, strength=strength)
    finally:
        runner.close()
    summary = summarize(samples)
    summary["failed"] = [s.caption for s in samples if not s.result["caption_ok"]]
    return summary


def test_demo_lcm_in_4_steps_keeps_its_floor_and_beats_the_base_in_4() -> None:
    import torch

    torch.set_num_threads(1)
    fast = _summary(
        AdherenceRunner("demo", lora=DEMO_LCM_LORA, steps=STEPS, scheduler="lcm"), 1.0, 1.0
    )
    for check, floor in FLOORS.items():
        assert fast[check] >= floor, (
            f"demo-lcm, lcm {STEPS} steps at guidance 1: {check} {fast[check]:.0%} is below the "
            f"{floor:.0%} floor on {CI_CAPTIONS} held-out captions; failed: {fast['failed']}"
        )
    base = _summary(AdherenceRunner("demo", steps=STEPS, scheduler="euler"), DEFAULT_CFG, None)
    assert fast["caption_ok"] >= base["caption_ok"] + LEAD, (
        f"demo-lcm in {STEPS} steps: {fast['caption_ok']:.0%} whole captions, the base demo "
        f"model in {STEPS} Euler steps at CFG {DEFAULT_CFG}: {base['caption_ok']:.0%}"
    )


def test_demo_lcm_in_2_steps_beats_the_lcm_sampler_without_it() -> None:
    import torch

    torch.set_num_threads(1)
    fast = _summary(
        AdherenceRunner("demo", lora=DEMO_LCM_LORA, steps=LORA_STEPS, scheduler="lcm"), 1.0, 1.0
    )
    plain = _summary(AdherenceRunner("demo", steps=LORA_STEPS, scheduler="lcm"), 1.0, None)
    assert fast["caption_ok"] >= plain["caption_ok"] + LORA_LEAD, (
        f"{LORA_STEPS} lcm steps at guidance 1: demo-lcm {fast['caption_ok']:.0%} whole "
        f"captions, the demo model without it {plain['caption_ok']:.0%}; failed with the LoRA: "
        f"{fast['failed']}"
    )
