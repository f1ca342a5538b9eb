"""TextDiff against DALL-E 2's formula, computed here independently in float64 numpy, its errors,
and the shipped text_diff workflow."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nodeflow.builder import WorkflowBuilder
from nodeflow.cli import main
from nodes.text_diff import text_diff, text_diff_embeds
from nodes.types import ImageEmbeds

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "text_diff.json"


def paper(z_i: np.ndarray, z_t0: np.ndarray, z_t: np.ndarray, theta: float) -> np.ndarray:
    """Ramesh et al. 2022, 3.3: z_d = (z_t - z_t0)/|z_t - z_t0|; slerp(z_i, z_d, theta) on the
    unit sphere, scaled back to |z_i|. Written out with sines, one row at a time."""
    out = []
    for row in np.atleast_2d(z_i):
        d = z_t - z_t0
        d = d / np.linalg.norm(d)
        length = np.linalg.norm(row)
        u = row / length
        omega = np.arccos(np.clip(u @ d, -1, 1))
        rotated = (np.sin((1 - theta) * omega) * u + np.sin(theta * omega) * d) / np.sin(omega)
        out.append(length * rotated)
    return np.stack(out)


def vectors(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("theta", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_the_edit_is_the_papers_slerp_toward_the_normalised_text_difference(theta):
    z_i, z_t0, z_t = vectors(0, 3, 64) * 2.5, vectors(1, 64), vectors(2, 64)
    got = text_diff_embeds(
        torch.from_numpy(z_i).float(),
        torch.from_numpy(z_t0).float()[None],
        torch.from_numpy(z_t).float()[None],
        theta,
    )
    assert got.dtype == torch.float32 and got.shape == (3, 64)
    np.testing.assert_allclose(got.double().numpy(), paper(z_i, z_t0, z_t, theta), atol=2e-5)


def test_the_ends_are_the_picture_and_the_text_direction_at_the_pictures_length():
    z_i, z_t0, z_t = vectors(3, 1, 16), vectors(4, 1, 16), vectors(5, 1, 16)
    args = [torch.from_numpy(v) for v in (z_i, z_t0, z_t)]
    start, end = text_diff_embeds(*args, 0.0), text_diff_embeds(*args, 1.0)
    np.testing.assert_allclose(start.numpy(), z_i, atol=1e-12)
    direction = (z_t - z_t0) / np.linalg.norm(z_t - z_t0)
    np.testing.assert_allclose(end.numpy(), direction * np.linalg.norm(z_i), atol=1e-12)


def test_the_angle_to_the_text_direction_shrinks_linearly_with_theta():
    z_i, z_t0, z_t = vectors(6, 1, 32), vectors(7, 1, 32), vectors(8, 1, 32)
    direction = ((z_t - z_t0) / np.linalg.norm(z_t - z_t0))[0]
    omega = np.arccos(z_i[0] @ direction / np.linalg.norm(z_i))
    for theta in (0.2, 0.4, 0.6):
        edited = text_diff_embeds(*(torch.from_numpy(v) for v in (z_i, z_t0, z_t)), theta)[0]
        angle = np.arccos(edited.numpy() @ direction / np.linalg.norm(edited.numpy()))
        assert angle == pytest.approx((1 - theta) * omega, abs=1e-9)


def _embeds(seed: int, batch: int, width: int) -> ImageEmbeds:
    return ImageEmbeds(torch.from_numpy(vectors(seed, batch, width)).float())


def test_the_node_names_itself_and_the_input_whose_width_differs():
    ctx = SimpleNamespace(node_id="edit")
    with pytest.raises(ValueError, match="TextDiff 'edit': input 'text_target' is 32 wide but"
                       " image_embeds is 64"):  # fmt: skip
        text_diff(ctx, _embeds(0, 1, 64), _embeds(1, 1, 64), _embeds(2, 1, 32))
    with pytest.raises(ValueError, match="input 'text_source' is 8 wide"):
        text_diff(ctx, _embeds(0, 1, 64), _embeds(1, 1, 8), _embeds(2, 1, 64))
    with pytest.raises(ValueError, match="input 'text_source' has a batch of 2, image_embeds 3"):
        text_diff(ctx, _embeds(0, 3, 64), _embeds(1, 2, 64), _embeds(2, 1, 64))


def test_the_same_caption_twice_gives_no_direction_and_says_so():
    ctx = SimpleNamespace(node_id="edit")
    same = _embeds(1, 1, 64)
    with pytest.raises(ValueError, match=r"'text_source' and 'text_target'.*embed alike"):
        text_diff(ctx, _embeds(0, 1, 64), same, same)


def test_a_width_mismatch_in_a_run_fails_at_the_node(make_executor):
    """demo-clip's text (64 wide) against the tiny prior's image encoder's embedding."""
    b = WorkflowBuilder()
    vision = b.add("LoadCLIPVision", id="vision", path="demo-clip-vision")
    picture = b.add("LoadImage", id="load", path="red-circle.png")
    encoded = b.add("CLIPVisionEncode", id="encode", clip_vision=vision.clip_vision,
                    image=picture.image)  # fmt: skip
    clip = b.add("LoadCLIP", id="clip", path="demo-clip")
    source = b.add("CLIPTextFeatures", id="source", clip=clip.clip, text="a red circle")
    target = b.add("CLIPTextFeatures", id="target", clip=clip.clip, text="a green circle")
    b.add("TextDiff", id="diff", image_embeds=encoded.image_embeds,
          text_source=source.text_embeds, text_target=target.text_embeds)  # fmt: skip
    result = make_executor().run(b.build(), targets=["diff"])
    assert not result.ok
    assert result.error.node == "diff"
    assert "input 'text_source'" in result.error.message and "wide" in result.error.message


def test_the_shipped_workflow_shows_the_edit_in_captions(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(WORKFLOW), "--output-dir", str(out), "--device", "cpu",
                 "--models-dir", str(tmp_path / "models")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = sorted(out.glob("*.png"))
    assert {p.name.split("_")[0] for p in saved} == {"before", "after"}
    for path in saved:
        with Image.open(path) as png:
            assert png.width == 360
            assert json.loads(png.text["workflow"])["nodes"]["diff"]["type"] == "TextDiff"
