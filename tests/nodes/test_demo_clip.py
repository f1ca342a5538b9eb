"""demo-clip: its training (deterministic, resumable), its folder, and the two towers against
transformers' own ``CLIPModel`` and ``CLIPProcessor`` loading the same folder.

A micro model (``ClipSizes.micro``) is trained and saved here; the shipped ``demo-clip`` is
checked the same way and for reading its captions better than chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from nodeflow.builder import WorkflowBuilder
from nodeflow.context import Environment
from nodes.clip_model import image_features, load_clip_folder, text_features
from nodes.clip_vocab import clip_tokenizer
from nodes.demo.dataset import caption, dataset
from nodes.demo.train_clip import (
    Batches,
    ClipSizes,
    build_clip,
    load_state,
    make_optimizer,
    pixel_values,
    save_clip_folder,
    save_state,
    train_step,
)
from nodes.loaders import DEMO_CLIP, SHIPPED, resolve_checkpoint

TOLERANCE = 1e-5
"""Same weights, same inputs, two code paths in fp32: only summation order differs."""
PROMPTS = ["a large red circle on a blue background", "three small green triangles on a white"
           " background", ""]  # fmt: skip


def scenes(n: int) -> list[Any]:
    return [picture for picture, _, _ in dataset(7, n, split="held_out")]


def as_tensor(pictures: list[Any]) -> torch.Tensor:
    array = np.stack([np.asarray(p, dtype=np.float32) for p in pictures]) / 255
    return torch.from_numpy(array).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    model = build_clip(ClipSizes.micro(), seed=3)
    optimizer = make_optimizer(model, 1e-3, 0.1)
    batches = Batches(4)
    for _ in range(2):
        train_step(model, optimizer, batches, 8, torch.device("cpu"))
    folder = tmp_path_factory.mktemp("clip") / "micro-clip"
    save_clip_folder(model, folder, half=False)
    return folder


@pytest.fixture(scope="module", params=["micro", "shipped"])
def folder(request: pytest.FixtureRequest, micro_folder: Path) -> Path:
    return micro_folder if request.param == "micro" else SHIPPED / DEMO_CLIP


def _trained(seed: int, steps: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    torch.set_num_threads(1)
    model = build_clip(ClipSizes.micro(), seed)
    optimizer = make_optimizer(model, 1e-3, 0.1)
    batches = Batches(seed + 1)
    losses = [train_step(model, optimizer, batches, 6, torch.device("cpu")) for _ in range(steps)]
    return model.state_dict(), losses


def test_training_steps_are_deterministic_for_a_seed():
    first, first_losses = _trained(seed=0, steps=2)
    again, again_losses = _trained(seed=0, steps=2)
    other, _ = _trained(seed=1, steps=2)
    assert first_losses == again_losses
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_a_resumed_run_continues_bit_for_bit(tmp_path: Path):
    torch.set_num_threads(1)
    straight, straight_losses = _trained(seed=5, steps=3)

    model = build_clip(ClipSizes.micro(), 5)
    optimizer = make_optimizer(model, 1e-3, 0.1)
    batches = Batches(6)
    losses = [train_step(model, optimizer, batches, 6, torch.device("cpu"))]
    save_state(tmp_path, model, optimizer, 1, batches, {"seconds": 0.0, "losses": []})

    model = build_clip(ClipSizes.micro(), 99)  # other weights: the state must replace them
    optimizer = make_optimizer(model, 1e-3, 0.1)
    batches = Batches(1234)
    meta = load_state(tmp_path, model, optimizer, batches)
    assert meta["step"] == 1
    losses += [train_step(model, optimizer, batches, 6, torch.device("cpu")) for _ in range(2)]
    assert losses == straight_losses
    assert all(torch.equal(model.state_dict()[k], straight[k]) for k in straight)


def test_position_negatives_give_positioned_pictures_a_position_variant():
    from nodes.demo.dataset import POSITION_PHRASES

    phrases = list(POSITION_PHRASES.values())
    _, captions, negatives = Batches(3, position_negatives=1.0)(48)
    positioned = [(c, n) for c, n in zip(captions, negatives, strict=True)
                  if any(p in c for p in phrases)]  # fmt: skip
    assert len(positioned) >= 3
    for text, negative in positioned:
        (phrase,) = [p for p in phrases if p in text]
        assert any(negative == text.replace(phrase, other) for other in phrases if other != phrase)


def test_a_saved_folder_loads_back_with_the_same_weights(tmp_path: Path):
    model = build_clip(ClipSizes.micro(), seed=2)
    save_clip_folder(model, tmp_path / "full", half=False)
    save_clip_folder(model, tmp_path / "half", half=True)
    full = load_clip_folder(tmp_path / "full", torch.float32).model.state_dict()
    half = load_clip_folder(tmp_path / "half", torch.float32).model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(full[key], value), key
        assert torch.equal(half[key], value.half().float()), key


def test_the_training_batches_pad_to_the_longest_caption_without_changing_features():
    model = build_clip(ClipSizes.micro(), seed=0).eval()
    captions = [caption(scene) for _, _, scene in dataset(1, 5)]
    short = Batches(0).tokens(captions)
    assert short.shape[1] < 77
    padded = clip_tokenizer()(captions, padding="max_length", max_length=77,
                              return_tensors="pt").input_ids  # fmt: skip
    assert torch.equal(padded[:, : short.shape[1]], short)
    with torch.no_grad():
        a = model.get_text_features(input_ids=short).pooler_output
        b = model.get_text_features(input_ids=padded).pooler_output
    assert (a - b).abs().max() < TOLERANCE


def test_training_pixels_are_what_the_image_processor_makes(micro_folder: Path):
    pictures = scenes(4)
    processor = CLIPProcessor.from_pretrained(micro_folder, local_files_only=True)
    expected = processor(images=pictures, return_tensors="pt").pixel_values
    assert (pixel_values(pictures) - expected).abs().max() < 1e-6


def test_the_image_tower_equals_transformers_clip_model(folder: Path):
    pictures = scenes(4)
    reference = CLIPModel.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    inputs = processor(images=pictures, return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_image_features(**inputs).pooler_output
        got = image_features(load_clip_folder(folder, torch.float32), as_tensor(pictures))
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < TOLERANCE


def test_the_text_tower_equals_transformers_clip_model(folder: Path):
    reference = CLIPModel.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    inputs = processor(text=PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=inputs.input_ids).pooler_output
    got = text_features(load_clip_folder(folder, torch.float32), PROMPTS)
    assert (got - expected).abs().max() < TOLERANCE


def test_image_features_pass_gradients_to_the_pixels(micro_folder: Path):
    """What CLIP guidance needs: d(similarity)/d(pixels), checked against a finite difference."""
    clip = load_clip_folder(micro_folder, torch.float64)
    text = text_features(clip, PROMPTS[:1], normalize=True)
    pixels = as_tensor(scenes(1)).double().requires_grad_(True)

    def similarity(x: torch.Tensor) -> torch.Tensor:
        return (image_features(clip, x, normalize=True) * text).sum()

    similarity(pixels).backward()
    direction = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)  # fmt: skip
    step = 1e-5
    with torch.no_grad():
        numeric = similarity(pixels + step * direction) - similarity(pixels - step * direction)
    numeric = float(numeric) / (2 * step)
    analytic = float((pixels.grad * direction).sum())
    assert abs(analytic) > 1e-6
    assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))


def test_a_larger_picture_is_resized_to_the_model_first(micro_folder: Path):
    clip = load_clip_folder(micro_folder, torch.float32)
    pictures = scenes(2)
    small = as_tensor(pictures)
    large = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")
    with torch.no_grad():
        a = image_features(clip, small, normalize=True)
        b = image_features(clip, large, normalize=True)
    assert (a * b).sum(-1).min() > 0.99
    with pytest.raises(ValueError, match="batch, 3, height, width"):
        image_features(clip, small[:, 0])


def test_demo_clip_is_a_built_in_name():
    location = resolve_checkpoint(DEMO_CLIP, Environment.from_dirs(Path("/nonexistent-models")))
    assert location == SHIPPED / DEMO_CLIP
    names = {p.name for p in location.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
            "merges.txt", "README.md", "training_summary.json"} <= names  # fmt: skip
    assert (location / "model.safetensors").stat().st_size < 8_000_000


def test_demo_clip_reads_each_attribute_of_held_out_scenes_above_chance():
    """Floors well below what the model card reports on 200 scenes (colour 98%, shape 91%, size
    and background 100%). Position is left out: few held-out captions name one (about ten in 60)
    and the model does not read it: 20% on 160 positioned scenes, chance (TRAINING.md)."""
    from nodes.demo.retrieval import load_demo_clip, retrieval

    scores = retrieval(load_demo_clip(SHIPPED / DEMO_CLIP), scenes=60)
    floors = {"color": 0.85, "shape": 0.7, "size": 0.9, "background": 0.9}
    for attribute, floor in floors.items():
        assert scores[attribute]["accuracy"] >= floor, (attribute, scores[attribute])


def _encode_graph(picture: str, text: str) -> Any:
    b = WorkflowBuilder()
    vision = b.add("LoadCLIPVision", id="vision", path=DEMO_CLIP)
    image = b.add("LoadImage", id="load", path=picture)
    b.add("CLIPVisionEncode", id="encode", clip_vision=vision.clip_vision, image=image.image)
    clip = b.add("LoadCLIP", id="clip", path=DEMO_CLIP)
    b.add("CLIPTextFeatures", id="text", clip=clip.clip, text=text)
    return b.build()


def test_the_nodes_give_transformers_embeddings_of_demo_clip(make_executor, tmp_path: Path):
    picture = scenes(1)[0]
    (tmp_path / "input").mkdir(exist_ok=True)
    picture.save(tmp_path / "input" / "scene.png")
    result = make_executor().run(_encode_graph("scene.png", PROMPTS[0]), targets=["encode", "text"])
    assert result.ok, result.error and result.error.traceback

    folder = SHIPPED / DEMO_CLIP
    reference = CLIPModel.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    inputs = processor(text=PROMPTS[:1], images=[picture], padding="max_length", max_length=77,
                       return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        image = reference.get_image_features(pixel_values=inputs.pixel_values).pooler_output
        text = reference.get_text_features(input_ids=inputs.input_ids).pooler_output
    got_image = result.values["encode"]["image_embeds"].embeds
    got_text = result.values["text"]["text_embeds"].embeds
    assert (got_image - image).abs().max() < TOLERANCE
    assert (got_text - text).abs().max() < TOLERANCE
