"""LoRA on the SD3 and Flux transformers (diffusers/PEFT layout), against diffusers'
``load_lora_weights`` (fp32, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flowgraphs import diffusers_image, nodeflow_image, reference_scheduler
from pixels import assert_same_pixels


@pytest.fixture(scope="module")
def flow_loras(models_dir: Path) -> dict[str, Path]:
    from nodes.tiny_flow import make_tiny_flux, make_tiny_sd3
    from nodes.tiny_flow_lora import write_tiny_transformer_lora

    checkpoints, loras = models_dir / "checkpoints", models_dir / "loras"
    made = {}
    for name, make in (("tiny-sd3", make_tiny_sd3), ("tiny-flux", make_tiny_flux)):
        if not (checkpoints / name / "model_index.json").exists():
            make(checkpoints / name, seed=0)
        out = loras / f"{name}-lora.safetensors"
        made[name] = write_tiny_transformer_lora(checkpoints / name, out, seed=5)
    return made


@pytest.mark.parametrize(
    "model, strength, settings",
    [
        ("tiny-sd3", 1.0, {"guidance_scale": 5.0}),
        ("tiny-sd3", 0.6, {"guidance_scale": 5.0}),
        ("tiny-flux", 0.8, {"guidance_scale": 3.5}),
    ],
)
def test_a_transformer_lora_equals_load_lora_weights(
    flow_loras, models_dir, make_executor, model, strength, settings
):
    import diffusers

    folder = models_dir / "checkpoints" / model
    cls = diffusers.FluxPipeline if model == "tiny-flux" else diffusers.StableDiffusion3Pipeline
    pipeline = cls.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    if model == "tiny-sd3":
        pipeline.scheduler = reference_scheduler(folder, "euler")
    pipeline.load_lora_weights(flow_loras[model])
    prompt = "a red circle on a blue background"
    flux = model == "tiny-flux"
    expected = diffusers_image(
        pipeline,
        seed=3,
        prompt=prompt,
        num_inference_steps=3,
        width=64,
        height=64,
        joint_attention_kwargs={"scale": strength},
        **({} if flux else {"negative_prompt": ""}),
        **settings,
    )
    common = {"prompt": prompt, "seed": 3, "steps": 3, "width": 64, "height": 64}
    guidance = {"scale": 1.0, "guidance": 3.5} if flux else {"scale": 5.0}
    lora = f"{model}-lora.safetensors"
    actual = nodeflow_image(
        make_executor, model, lora=lora, lora_strength=strength, **common, **guidance
    )
    assert_same_pixels(actual, expected)
    plain = nodeflow_image(make_executor, model, **common, **guidance)
    assert np.abs(actual - plain).max() > 1e-3, "the LoRA must change the picture"
