"""SD3 single files (Stability's original layout): the key conversion against diffusers' own, and
a file loading to the same pictures as the folder it was made from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flowgraphs import diffusers_image, flow_graph, nodeflow_image, reference_scheduler
from pixels import assert_same_pixels
from safetensors.torch import load_file

from nodes.mmdit_layout import sd3_to_diffusers, sd3_to_original


@pytest.fixture(scope="module")
def sd3_files(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_sd3
    from nodes.tiny_flow_single import write_sd3_single_file

    checkpoints = models_dir / "checkpoints"
    for name, options in (("tiny-sd3", {}), ("tiny-sd35", {"sd35": True})):
        if not (checkpoints / name / "model_index.json").exists():
            make_tiny_sd3(checkpoints / name, seed=0, **options)
        write_sd3_single_file(checkpoints / name, checkpoints / f"{name}.safetensors")
    write_sd3_single_file(
        checkpoints / "tiny-sd3", checkpoints / "tiny-sd3-no-clips.safetensors", text_encoders=False
    )
    return checkpoints


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-sd35"])
def test_the_mmdit_layout_is_the_one_diffusers_converts(sd3_files, name):
    """diffusers' own converter (the oracle) takes our original layout back to the folder's
    tensors, and so does ours: SD3 blocks, the pre-only last block, SD3.5 attn2 and qk-norms."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    folder = load_file(sd3_files / name / "transformer" / "diffusion_pytorch_model.safetensors")
    original = sd3_to_original(folder)
    assert any(".attn.qkv." in key for key in original)
    theirs = convert_sd3_transformer_checkpoint_to_diffusers(
        {"model.diffusion_model." + k: v for k, v in original.items()}
    )
    ours = sd3_to_diffusers(original)
    assert set(theirs) == set(ours) == set(folder)
    for key, value in folder.items():
        assert torch.equal(theirs[key], value) and torch.equal(ours[key], value), key


def test_diffusers_reads_the_written_file_as_the_folder(sd3_files):
    """The file is the real single-file layout: diffusers' from_single_file gives the folder's
    weights in every component."""
    from diffusers import StableDiffusion3Pipeline

    folder = sd3_files / "tiny-sd3"
    single = StableDiffusion3Pipeline.from_single_file(
        sd3_files / "tiny-sd3.safetensors", config=str(folder), local_files_only=True
    )
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        expected = getattr(pipe, part).state_dict()
        actual = getattr(single, part).state_dict()
        assert set(actual) >= set(expected) - {"encoder.embed_tokens.weight"}, part
        for key in expected.keys() & actual.keys():
            assert torch.equal(actual[key], expected[key]), f"{part}.{key}"


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-sd35"])
def test_a_single_file_gives_the_folders_pictures(sd3_files, make_executor, name):
    from diffusers import StableDiffusion3Pipeline

    settings = {"prompt": "a blue square", "negative": "red", "seed": 6, "scale": 6.0}
    from_file = nodeflow_image(make_executor, f"{name}.safetensors", **settings)
    from_folder = nodeflow_image(make_executor, name, **settings)
    assert_same_pixels(from_file, from_folder)
    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_files / name, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = reference_scheduler(sd3_files / name, "euler")
    expected = diffusers_image(
        pipe, seed=6, prompt="a blue square", negative_prompt="red", num_inference_steps=4,
        guidance_scale=6.0, width=64, height=64,
    )  # fmt: skip
    assert_same_pixels(from_file, expected)


def test_a_file_without_text_encoders_says_so(sd3_files, make_executor):
    result = make_executor().run(
        flow_graph("tiny-sd3-no-clips.safetensors", prompt="a cat"), targets=["decode"]
    )
    assert not result.ok
    assert "has no CLIP text encoders" in str(result.error.message)


def test_load_unet_reads_the_transformer_of_a_file(sd3_files, make_executor):
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    b.add("LoadUNet", id="unet", path=str(sd3_files / "tiny-sd3-no-clips.safetensors"))
    result = make_executor().run(b.build(), targets=["unet"])
    assert result.ok, result.error and result.error.traceback
    unet = result.values["unet"]["unet"]
    assert type(unet.model).__name__ == "SD3Transformer2DModel"
    assert unet.family.name == "sd3" and unet.latent_channels == 16 and unet.latent_scale == 2


def test_the_file_is_described_as_sd3(sd3_files):
    from nodes.single_file import CheckpointFile, detect

    found = detect(CheckpointFile(sd3_files / "tiny-sd3.safetensors"))
    assert found.describe() == "SD3 checkpoint [mmdit layout]"
