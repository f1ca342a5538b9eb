"""The shipped ``demo-clip-noised`` in CI: noise-aware CLIP guidance toward held-out captions
raises what the evaluator reads of them, against the same seeds without it.

Unconditional sampling (the empty prompt at CFG 1), so whatever of the caption the pictures
show is the guidance's doing; the benchmark's setting (``tests/benchmarks/bench_guidance.py``,
``noised-clip-uncond``, euler 20 steps, Denoise seed 0) on its first captions. The CLIP is
loaded by the name workflows use (``demo-clip-noised`` through ``resolve_checkpoint`` and
``load_clip_folder``), so a regression in the file, its loading, the term or the guidance fold
lowers the count here.
"""

from __future__ import annotations

from typing import Any

import torch

from nodeflow.context import Environment
from nodes.demo.adherence import held_out_scenes

CAPTIONS = 12
SCALE = 100.0
ATTRIBUTE = "background_ok"
LEAD = 4
"""Pictures the guidance must add to the unguided count (the benchmark's full run: BENCHMARKS.md,
"Noise-aware CLIP guidance")."""


def _pictures(parts: Any, clip: Any, scenes: list[Any], scale: float) -> torch.Tensor:
    from nodes.clip_guidance import NoisedCLIPTerm
    from nodes.clip_model import text_features
    from nodes.demo.dataset import caption
    from nodes.denoise import sample
    from nodes.schedulers import make_scheduler
    from nodes.text import encode_text
    from nodes.types import Conditioning, Guider, Latent
    from nodes.vae import decode

    empty = encode_text(parts.text_encoder, "", None).embeds
    prompt = Conditioning(embeds=empty.expand(len(scenes), -1, -1).contiguous())
    text = text_features(clip, [caption(scene) for scene in scenes])
    guider = Guider(unet=parts.unet, positive=prompt, negative=prompt, scale=1.0,
                    terms=(NoisedCLIPTerm(clip, text, scale),))  # fmt: skip
    recipe = make_scheduler("euler", parts.unet.scheduler_config, 20, "default", False)
    latents = sample(guider, recipe, Latent(None, 64, 64, len(scenes)), 0)
    return decode(parts.vae, Latent(latents, 64, 64, len(scenes))).pixels


def test_noised_clip_guidance_raises_the_evaluators_reading_of_held_out_captions(tmp_path):
    from nodes.clip_model import load_clip_folder
    from nodes.demo.evaluate import score
    from nodes.loaders import _load_diffusers_folder, demo_model, resolve_checkpoint

    torch.set_num_threads(1)
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    clip = load_clip_folder(resolve_checkpoint("demo-clip-noised", env))
    assert clip.noise_aware
    parts = _load_diffusers_folder(demo_model(), torch.float32, "auto")
    scenes = held_out_scenes(CAPTIONS, 0)
    counts = {}
    for scale in (0.0, SCALE):
        pixels = _pictures(parts, clip, scenes, scale)
        counts[scale] = sum(
            bool(score(p.numpy(), s)[ATTRIBUTE]) for p, s in zip(pixels, scenes, strict=True)
        )
    assert counts[SCALE] >= counts[0.0] + LEAD, (
        f"demo-clip-noised at scale {SCALE:g}: {ATTRIBUTE} on {counts[SCALE]} of {CAPTIONS} "
        f"held-out captions, {counts[0.0]} without guidance (the same seeds)"
    )
