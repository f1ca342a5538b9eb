"""The shipped ``demo-style`` LoRA in CI: at strength 1 on fixed held-out captions its pictures
read as outlined and keep their colours, and at strength 0 they stay filled.

Rendered through ``nodes.demo.adherence`` (the graph ``tests/benchmarks/bench_style_lora.py``
measures) and the name users' workflows use, ``LoadLoRA path: "demo-style"``, so a regression in
the LoRA file, its loading (the convolution pairs included) or its strength lowers the figures here.
"""

from __future__ import annotations

from typing import Any

from nodes.demo.adherence import DEFAULT_CFG, AdherenceRunner, held_out_scenes, summarize
from nodes.loaders import DEMO_LORA

CI_CAPTIONS = 16
CI_SEED = 0
FLOORS = {"outline_score": 0.15, "outlined": 10 / 16, "color_ok": 14 / 16, "background_ok": 14 / 16}
"""demo-style v2b (2026-11-30, re-trained on the v2b demo-sd U-Net) scores on these 16 captions at
CFG 7.5 (``bench_style_lora.py --lora v2b=... --n 16 --seed 0 --strengths 1``): mean outline score
0.217, 12/16 read as outlined, 16/16 shape colour, 16/16 background: two captions of margin on
each share and about 0.07 on the outline score (its 200-caption figures: BENCHMARKS.md,
"demo-style v2"). A LoRA that does not load or is not applied falls to the base model's filled
shapes (0.000 here). The v2 LoRA trained on the old U-Net scored 0.217, 12/16, 14/16, 16/16 here
on that U-Net."""
PLAIN_CEILING = 0.05
"""At strength 0 the base model draws filled shapes (mean outline score 0.000 here, 0.006 on the
benchmark's 200 captions; v2b demo-sd)."""


def _summary(strength: float) -> dict[str, Any]:
    runner = AdherenceRunner("demo", lora=DEMO_LORA)
    try:
        samples = runner.run(
            held_out_scenes(CI_CAPTIONS, seed=CI_SEED),
            cfg=DEFAULT_CFG,
            seed=CI_SEED,
            strength=strength,
        )
    finally:
        runner.close()
    summary = summarize(samples)
    summary["outlined"] = sum(s.result["style"] == "outlined" for s in samples) / len(samples)
    summary["misread"] = [s.caption for s in samples if not s.result["color_ok"]]
    return summary


def test_demo_style_at_strength_1_draws_outlines_in_the_prompts_colours() -> None:
    import torch

    torch.set_num_threads(1)
    styled = _summary(1.0)
    for check, floor in FLOORS.items():
        assert styled[check] >= floor, (
            f"demo-style at strength 1, CFG {DEFAULT_CFG}: {check} {styled[check]:.3f} is below "
            f"the {floor:.3f} floor on {CI_CAPTIONS} held-out captions; wrong colour: "
            f"{styled['misread']}"
        )
    plain = _summary(0.0)
    assert plain["outline_score"] < PLAIN_CEILING, (
        f"demo-style at strength 0 should leave the base model's filled shapes: mean outline "
        f"score {plain['outline_score']:.3f}"
    )
