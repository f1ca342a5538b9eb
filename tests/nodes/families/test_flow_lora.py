"""LoRA on the SD3 and Flux transformers (diffusers/PEFT layout), against diffusers'
``load_lora_weights`` (fp32, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flowgraphs import diffusers_image, flow_graph, nodeflow_image, reference_scheduler
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


@pytest.fixture(scope="module")
def tiny_flux(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_flux

    folder = models_dir / "checkpoints" / "tiny-flux"
    if not (folder / "model_index.json").exists():
        make_tiny_flux(folder, seed=0)
    return folder


def _flux_pipeline(folder: Path) -> object:
    import diffusers

    pipeline = diffusers.FluxPipeline.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


FLUX_RUN = {"prompt": "a red circle on a blue background", "seed": 3, "width": 64, "height": 64}


def _flux_images(pipeline, make_executor, lora: str, strength: float):
    expected = diffusers_image(
        pipeline,
        num_inference_steps=3,
        guidance_scale=3.5,
        joint_attention_kwargs={"scale": strength},
        **FLUX_RUN,
    )
    settings = {**FLUX_RUN, "steps": 3, "scale": 1.0, "guidance": 3.5}
    actual = nodeflow_image(
        make_executor, "tiny-flux", lora=lora, lora_strength=strength, **settings
    )
    plain = nodeflow_image(make_executor, "tiny-flux", **settings)
    return actual, expected, plain


def test_a_kohya_flux_lora_equals_load_lora_weights(tiny_flux, models_dir, make_executor):
    """BFL names, fused q/k/v and kohya alphas, read by diffusers' own kohya-Flux converter."""
    from nodes.tiny_flow_lora import write_tiny_kohya_flux_lora

    path = write_tiny_kohya_flux_lora(
        tiny_flux, models_dir / "loras" / "tiny-flux-kohya.safetensors", seed=7
    )
    pipeline = _flux_pipeline(tiny_flux)
    pipeline.load_lora_weights(path)
    actual, expected, plain = _flux_images(pipeline, make_executor, path.name, 0.8)
    assert_same_pixels(actual, expected)
    assert np.abs(actual - plain).max() > 1e-3, "the LoRA must change the picture"


def test_a_kohya_flux_single_block_linear1_is_split_into_q_k_v_and_mlp(
    tiny_flux, models_dir, make_executor
):
    """``linear1`` stacks q, k, v and the MLP input; diffusers' converter splits it with the
    real model's widths only, so the reference converts the rest with diffusers and
    ``linear1`` here, as the sum it is: shared ``down``, ``up``'s rows cut at the tiny model's
    widths, alpha / rank folded into ``down`` as diffusers folds it."""
    import torch
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from safetensors.torch import load_file

    from nodes.tiny_flow_lora import write_tiny_kohya_flux_lora

    path = write_tiny_kohya_flux_lora(
        tiny_flux, models_dir / "loras" / "tiny-flux-kohya-l1.safetensors", seed=9, linear1=True
    )
    pipeline = _flux_pipeline(tiny_flux)
    state = load_file(path)
    linear1 = {k: state.pop(k) for k in list(state) if "_linear1." in k}
    converted = _convert_kohya_flux_lora_to_diffusers(state)
    blocks = pipeline.transformer.single_transformer_blocks
    assert linear1, "the file must have linear1 layers"
    for i, block in enumerate(blocks):
        key = f"lora_unet_single_blocks_{i}_linear1"
        down, up = linear1[f"{key}.lora_down.weight"], linear1[f"{key}.lora_up.weight"]
        scale = linear1[f"{key}.alpha"].item() / down.shape[0]
        names = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
        sizes = [block.get_submodule(n).out_features for n in names]
        for name, rows in zip(names, torch.split(up, sizes, dim=0), strict=True):
            prefix = f"transformer.single_transformer_blocks.{i}.{name}"
            converted[f"{prefix}.lora_A.weight"] = down * scale
            converted[f"{prefix}.lora_B.weight"] = rows.contiguous()
    pipeline.load_lora_weights(converted)
    actual, expected, plain = _flux_images(pipeline, make_executor, path.name, 1.0)
    assert_same_pixels(actual, expected)
    assert np.abs(actual - plain).max() > 1e-3, "the LoRA must change the picture"


def test_a_kohya_flux_lora_on_another_transformer_names_the_file(
    tiny_flux, models_dir, make_executor
):
    from nodes.tiny_flow import make_tiny_sd3
    from nodes.tiny_flow_lora import write_tiny_kohya_flux_lora

    sd3 = models_dir / "checkpoints" / "tiny-sd3"
    if not (sd3 / "model_index.json").exists():
        make_tiny_sd3(sd3, seed=0)
    path = write_tiny_kohya_flux_lora(
        tiny_flux, models_dir / "loras" / "tiny-flux-kohya-other.safetensors", seed=7
    )
    graph = flow_graph("tiny-sd3", prompt="x", steps=1, lora=path.name)
    result = make_executor().run(graph, targets=["decode"])
    assert not result.ok
    assert "tiny-flux-kohya-other.safetensors does not fit this model" in str(result.error)
