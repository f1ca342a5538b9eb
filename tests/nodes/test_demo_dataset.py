"""The demo model's procedural dataset, its rule-based evaluator, and the trainers' core steps.

The evaluator reading the renderer's own pictures correctly is the independent check of both
(they share only the palette and the nominal sizes); it must also reject pictures of other scenes.
The trainer tests run the real step functions on a micro model, so a broken loss, a frozen
parameter or a LoRA file ``nodes.lora`` cannot read fails here rather than an hour into training.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from nodes.demo.dataset import (
    COLORS,
    PALETTE,
    SHAPES,
    Scene,
    caption,
    dataset,
    is_held_out,
    render,
    sample_scene,
)
from nodes.demo.evaluate import analyze, score

ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "background_ok",
    "color_ok",
    "shape_ok",
    "count_ok",
    "size_ok",
    "shape_and_color_ok",
    "caption_ok",
    "style_ok",
)


def test_same_seed_same_pictures_and_captions() -> None:
    first = [(np.asarray(image).tobytes(), text) for image, text, _ in dataset(3, 40)]
    again = [(np.asarray(image).tobytes(), text) for image, text, _ in dataset(3, 40)]
    other = [(np.asarray(image).tobytes(), text) for image, text, _ in dataset(4, 40)]
    assert first == again
    assert first != other
    image, _, _ = next(dataset(3, 1))
    assert image.size == (64, 64) and image.mode == "RGB"


def test_plain_and_outlined_datasets_hold_the_same_scenes() -> None:
    plain = [(text, scene) for _, text, scene in dataset(5, 20)]
    outlined = [(text, scene) for _, text, scene in dataset(5, 20, style="outlined")]
    assert [t for t, _ in plain] == [t for t, _ in outlined]
    assert all(s.style == "outlined" for _, s in outlined)
    assert [dataclasses.replace(s, style="plain") for _, s in outlined] == [s for _, s in plain]


def test_captions() -> None:
    assert caption(Scene("circle", "red", "blue")) == "a large red circle on a blue background"
    assert (
        caption(Scene("square", "yellow", "black", "small", 2))
        == "two small yellow squares on a black background"
    )
    assert (
        caption(Scene("triangle", "green", "orange", "small", 1, "left"))
        == "a small green triangle on the left on an orange background"
    )
    with pytest.raises(ValueError):
        Scene("circle", "red", "red")
    with pytest.raises(ValueError):
        Scene("circle", "red", "blue", "large", 3)
    with pytest.raises(ValueError):
        Scene("circle", "red", "blue", "small", 2, "left")


def test_captions_state_exactly_the_scene() -> None:
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng, split="all")
        words = caption(scene).split()
        assert words[:3] == [{1: "a", 2: "two", 3: "three"}[scene.count], scene.size, scene.color]
        assert words[3] == scene.shape + ("s" if scene.count > 1 else "")
        assert words[-2:] == [scene.background, "background"]
        assert len(words) == (8 if scene.position is None else 11)
        if scene.position is not None:
            assert scene.position in words


def test_held_out_rule() -> None:
    triples = [(s, c, b) for s in SHAPES for c in COLORS for b in COLORS if b != c]
    held = {t for t in triples if is_held_out(Scene(*t))}
    assert 0.08 < len(held) / len(triples) < 0.17
    trained = set(triples) - held
    # Every pair of attributes still occurs in training: held-out scenes test composition.
    for i, j in itertools.combinations(range(3), 2):
        assert {(t[i], t[j]) for t in trained} == {(t[i], t[j]) for t in triples}
    rng = random.Random(1)
    assert not any(is_held_out(sample_scene(rng)) for _ in range(300))
    assert all(is_held_out(sample_scene(rng, split="held_out")) for _ in range(100))
    assert not any(is_held_out(scene) for _, _, scene in dataset(2, 100))


@pytest.mark.parametrize("style", ["plain", "outlined"])
def test_evaluator_reads_renders(style: str) -> None:
    results = [
        score(image, scene) for image, _, scene in dataset(11, 250, split="all", style=style)
    ]
    for check in (*CHECKS, "position_ok"):
        values = [r[check] for r in results if r[check] is not None]
        accuracy = sum(values) / len(values)
        assert accuracy >= 0.99, (check, accuracy)
    outline = [r["outline_score"] for r in results]
    if style == "plain":
        assert max(outline) < 0.05
    else:
        assert min(outline) > 0.15


def test_evaluator_accepts_arrays() -> None:
    scene = Scene("triangle", "purple", "white", "large", 1, "right")
    image = render(scene)
    floats = np.asarray(image, dtype=np.float32) / 255
    assert analyze(floats) == analyze(image) == analyze(floats.transpose(2, 0, 1))
    assert score(floats, scene)["caption_ok"]


def _changed(scene: Scene) -> Iterator[tuple[str, Scene]]:
    """Scenes differing from ``scene`` in one attribute, with the check that must then fail."""
    color = next(c for c in ("blue", "yellow", "red") if c not in (scene.color, scene.background))
    yield "color_ok", dataclasses.replace(scene, color=color)
    background = next(
        c for c in ("black", "white", "green") if c not in (scene.color, scene.background)
    )
    yield "background_ok", dataclasses.replace(scene, background=background)
    yield "shape_ok", dataclasses.replace(scene, shape=SHAPES[(SHAPES.index(scene.shape) + 1) % 3])
    yield (
        "count_ok",
        dataclasses.replace(scene, count=2 if scene.count != 2 else 1, position=None, size="small"),
    )
    yield "style_ok", dataclasses.replace(scene, style="outlined")


def test_evaluator_rejects_wrong_pictures() -> None:
    rng = random.Random(7)
    for _ in range(40):
        scene = sample_scene(rng, split="all")
        assert score(render(scene), scene)["caption_ok"]
        for check, wrong in _changed(scene):
            result = score(render(wrong), scene)
            assert result[check] is False, (check, caption(scene), caption(wrong))
            if check != "style_ok":
                assert not result["caption_ok"]
    scene = Scene("circle", "red", "blue")
    blank = Image.new("RGB", (64, 64), PALETTE["blue"])
    assert score(blank, scene)["found_count"] == 0 and not score(blank, scene)["caption_ok"]
    noise = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    assert not score(noise, scene)["caption_ok"]
    small = Scene("circle", "red", "blue", "small", 1, "left")
    assert not score(render(dataclasses.replace(small, position="right")), small)["position_ok"]
    assert not score(render(dataclasses.replace(small, size="large")), small)["size_ok"]


# --- the trainers' core, on a micro model ---------------------------------------------------


@pytest.fixture(scope="module")
def trainer() -> Iterator[ModuleType]:
    """``nodes.demo.train_demo``, imported only here: it is a script, not used by the nodes."""
    yield importlib.import_module("nodes.demo.train_demo")


def _snapshot(module: object) -> dict[str, object]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}  # type: ignore[attr-defined]


def test_training_steps_learn(trainer: ModuleType) -> None:
    import torch

    torch.set_num_threads(1)
    sizes = trainer.ModelSizes.micro()
    models = trainer.build_models(sizes, seed=0)
    batches = trainer.Batcher(0, dropout=0.5)
    pixels, ids, captions = batches(4)
    assert pixels.shape == (4, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert ids.shape == (4, 77) and "" in captions  # dropout to the empty prompt happens

    vae_before = _snapshot(models.vae)
    optimizer = torch.optim.AdamW(models.vae.parameters(), lr=1e-3)
    assert np.isfinite(trainer.vae_step(models.vae, pixels, optimizer, 1e-4))
    assert any(not torch.equal(vae_before[k], v) for k, v in models.vae.named_parameters())

    models.vae.requires_grad_(False)
    vae_frozen = _snapshot(models.vae)
    unet_before = _snapshot(models.unet)
    optimizer, parameters = trainer.adamw((models.unet, models.text_encoder), 1e-3, 1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        pixels, ids, _ = batches(4)
        loss = trainer.diffusion_step(
            models,
            trainer.noise_scheduler(),
            pixels,
            ids,
            optimizer,
            parameters,
            generator=generator,
        )
        assert np.isfinite(loss) and loss > 0
    changed = [k for k, v in models.unet.named_parameters() if not torch.equal(unet_before[k], v)]
    assert len(changed) > len(unet_before) // 2
    assert all(torch.equal(vae_frozen[k], v) for k, v in models.vae.named_parameters())


def test_noise_schedule_is_sd() -> None:
    from nodes.tiny import family_config

    config = family_config("sd1", "scheduler")
    assert (config["beta_schedule"], config["beta_start"], config["beta_end"]) == (
        "scaled_linear",
        0.00085,
        0.012,
    )
    assert config["num_train_timesteps"] == 1000 and config["prediction_type"] == "epsilon"


def test_saved_folder_and_lora_load(trainer: ModuleType, tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from nodes.lora import read_lora_file, resolve_lora

    torch.set_num_threads(1)
    models = trainer.build_models(trainer.ModelSizes.micro(), seed=0)
    files = trainer.save_diffusers_folder(models, tmp_path / "model")
    assert all(size > 0 for size in files.values())
    dtypes = {
        part: {v.dtype for v in load_file(tmp_path / "model" / part / name).values()}
        for part, name in (
            ("unet", "diffusion_pytorch_model.safetensors"),
            ("text_encoder", "model.safetensors"),
            ("vae", "diffusion_pytorch_model.safetensors"),
        )
    }
    assert dtypes == {
        "unet": {torch.float16},
        "text_encoder": {torch.float16},
        "vae": {torch.float32},
    }
    # fp32 explicitly, as nodeflow's loaders ask for a dtype: without one, transformers keeps the
    # text encoder's fp16 and diffusers casts the U-Net to fp32, and they cannot be mixed.
    pipe = StableDiffusionPipeline.from_pretrained(
        tmp_path / "model", local_files_only=True, torch_dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a large red circle on a blue background",
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3)  # the VAE's factor 4 is read from its config

    lora = importlib.import_module("nodes.demo.train_lora")
    base = lora.load_base(tmp_path / "model", torch.device("cpu"))
    pairs = lora.add_lora(base.unet, rank=4, alpha=2.0)
    before = _snapshot(base.unet)
    optimizer, parameters = trainer.adamw([torch.nn.ModuleList(pairs.values())], 1e-2, 0.0)
    pixels, ids, _ = trainer.Batcher(0, style="outlined")(2)
    for _ in range(2):
        trainer.diffusion_step(base, trainer.noise_scheduler(), pixels, ids, optimizer, parameters)
    assert all(torch.equal(before[k], v) for k, v in base.unet.named_parameters())
    assert any(p.up.weight.abs().sum() > 0 for p in pairs.values())

    from safetensors.torch import save_file

    save_file(lora.kohya_state(pairs), tmp_path / "style.safetensors")
    resolved = resolve_lora(read_lora_file(tmp_path / "style.safetensors"), {"unet": pipe.unet})
    assert set(resolved["unet"]) == set(pairs)
