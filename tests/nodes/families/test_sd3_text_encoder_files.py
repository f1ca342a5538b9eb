"""SD3's three text encoders as separate files (ComfyUI's ``clip_l``, ``clip_g``, ``t5xxl`` in
``text_encoders/``, what TripleCLIPLoader reads): LoadTextEncoder's ``path``/``path_2``/``path_3``
give diffusers' StableDiffusion3Pipeline's pixels for the same components."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgraphs import diffusers_image, flow_graph, nodeflow_image, reference_scheduler
from pixels import assert_same_pixels

TEXT = ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")


@pytest.fixture(scope="module")
def sd3_parts(models_dir: Path) -> Path:
    """A tiny SD3 as ComfyUI's SD3 Medium files: the transformer + VAE file without text
    encoders (``sd3_medium.safetensors``) and the three text encoder files."""
    from nodes.tiny_flow import make_tiny_sd3
    from nodes.tiny_flow_single import write_sd3_single_file, write_sd3_text_encoder_files

    folder = models_dir / "checkpoints" / "tiny-sd3"
    if not (folder / "model_index.json").exists():
        make_tiny_sd3(folder, seed=0)
    root = models_dir / "triple"
    write_sd3_single_file(folder, root / "sd3_medium.safetensors", text_encoders=False)
    write_sd3_text_encoder_files(folder, *(root / name for name in TEXT))
    return root


def _paths(root: Path, *names: str) -> dict[str, str]:
    keys = ("path", "path_2", "path_3")
    return {key: str(root / name) for key, name in zip(keys, names, strict=True)}


def test_three_text_encoder_files_give_the_pipelines_pixels(sd3_parts, models_dir, make_executor):
    from diffusers import StableDiffusion3Pipeline

    settings = {"prompt": "a blue square", "negative": "red", "seed": 3, "scale": 5.0}
    image = nodeflow_image(
        make_executor, str(sd3_parts / "sd3_medium.safetensors"),
        text_encoders=_paths(sd3_parts, *TEXT), **settings,
    )  # fmt: skip
    folder = models_dir / "checkpoints" / "tiny-sd3"
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = reference_scheduler(folder, "euler")
    expected = diffusers_image(
        pipe, seed=3, prompt="a blue square", negative_prompt="red", num_inference_steps=4,
        guidance_scale=5.0, width=64, height=64,
    )  # fmt: skip
    assert_same_pixels(image, expected)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((TEXT[2], TEXT[1], TEXT[0]), "path t5xxl_fp16.safetensors is a T5 encoder"),
        ((TEXT[0], TEXT[1], TEXT[1]), "path_3 clip_g.safetensors is not a T5 encoder"),
    ],
)
def test_a_wrong_order_of_the_three_files_is_named(sd3_parts, make_executor, names, message):
    graph = flow_graph(
        str(sd3_parts / "sd3_medium.safetensors"), prompt="a cat",
        text_encoders=_paths(sd3_parts, *names),
    )  # fmt: skip
    result = make_executor().run(graph, targets=["decode"])
    assert not result.ok
    assert message in str(result.error.message)


def test_a_third_file_without_a_second_is_refused(sd3_parts, make_executor):
    paths = {"path": str(sd3_parts / TEXT[0]), "path_3": str(sd3_parts / TEXT[2])}
    graph = flow_graph(str(sd3_parts / "sd3_medium.safetensors"), prompt="a", text_encoders=paths)
    result = make_executor().run(graph, targets=["decode"])
    assert not result.ok
    assert "path_3 (SD3's T5-XXL) needs path_2" in str(result.error.message)
