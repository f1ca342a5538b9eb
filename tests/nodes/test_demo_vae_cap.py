"""The VAE ceiling measurement (``nodes.demo.vae_cap``): a perfect reconstruction reads as its
caption, a blurring one loses small shapes first, and a real (micro) VAE plugs in."""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from nodes.demo.dataset import sample_scene
from nodes.demo.train_demo import ModelSizes, build_models
from nodes.demo.vae_cap import reconstruction_cap, vae_reconstructor


def _scenes(n: int) -> list:
    rng = random.Random(0)
    return [sample_scene(rng, split="held_out") for _ in range(n)]


def test_an_exact_reconstruction_reads_as_its_caption():
    cap = reconstruction_cap(lambda pixels: pixels, _scenes(40), batch=16)
    assert cap["count"] == 40
    assert all(v == 1.0 for v in cap["accuracy"].values() if v is not None)
    assert cap["misread"] == {}


def test_a_blurring_reconstruction_loses_small_shapes_first():
    def blur(pixels: torch.Tensor) -> torch.Tensor:  # a 7x7 box blur: corners round off
        kernel = torch.full((3, 1, 7, 7), 1 / 49)
        padded = torch.nn.functional.pad(pixels, (3, 3, 3, 3), mode="replicate")
        return torch.nn.functional.conv2d(padded, kernel, groups=3)

    cap = reconstruction_cap(blur, _scenes(60))
    assert cap["accuracy"]["shape_ok"] < 0.9
    assert cap["accuracy"]["background_ok"] == 1.0
    small = [v for k, v in cap["shape_by_kind"].items() if k.startswith("small")]
    large = [v for k, v in cap["shape_by_kind"].items() if k.startswith("large")]
    assert sum(small) / len(small) < sum(large) / len(large)
    assert sum(cap["misread"].values()) == round((1 - cap["accuracy"]["shape_ok"]) * 60)


def test_a_vae_reconstructs_in_the_evaluators_range():
    vae = build_models(ModelSizes.micro(), seed=0).vae.eval()
    cap = reconstruction_cap(vae_reconstructor(vae, sample=True), _scenes(4))
    assert cap["count"] == 4 and set(cap["accuracy"]) >= {"shape_ok", "color_ok"}


def test_outlined_scenes_read_as_outlined_until_a_blur_fills_them_in():
    outlined = [replace(scene, style="outlined") for scene in _scenes(40)]
    exact = reconstruction_cap(lambda pixels: pixels, outlined)
    assert exact["outlined"] == 1.0 and 0.2 < exact["outline_score"] < 0.7
    plain = reconstruction_cap(lambda pixels: pixels, _scenes(40))
    assert plain["outlined"] == 0.0 and plain["outline_score"] < 0.05

    def blur(pixels: torch.Tensor) -> torch.Tensor:  # a 5x5 box blur fills thin outlines' holes
        kernel = torch.full((3, 1, 5, 5), 1 / 25)
        padded = torch.nn.functional.pad(pixels, (2, 2, 2, 2), mode="replicate")
        return torch.nn.functional.conv2d(padded, kernel, groups=3)

    blurred = reconstruction_cap(blur, outlined)
    assert blurred["outline_score"] < exact["outline_score"]
