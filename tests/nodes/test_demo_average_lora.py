"""``nodes.demo.average_lora``: the saves of one run averaged element-wise into one LoRA file
that keeps the rank, alpha and layout, refusing files that do not line up."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nodes.demo.average_lora import average_files, main


def _save(path, seed: int, step: int, alpha: float = 4.0, rank: int = 2) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "lora_unet_a.lora_down.weight": torch.randn(rank, 6, generator=generator).half(),
        "lora_unet_a.lora_up.weight": torch.randn(5, rank, generator=generator).half(),
        "lora_unet_a.alpha": torch.tensor(alpha),
    }
    meta = {"format": "pt", "nodeflow_training": json.dumps({"step": step, "rank": str(rank)})}
    save_file(tensors, path, metadata=meta)


def test_the_mean_is_element_wise_and_keeps_layout_dtype_and_alpha(tmp_path):
    paths = [tmp_path / f"lora-{s}.safetensors" for s in (100, 200, 300)]
    for seed, (step, path) in enumerate(zip((100, 200, 300), paths, strict=True)):
        _save(path, seed, step)
    out = main([str(p) for p in paths] + ["--out", str(tmp_path / "mean.safetensors")])
    mean = load_file(out)
    files = [load_file(p) for p in paths]
    for key in ("lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight"):
        expected = (files[0][key].float() + files[1][key].float() + files[2][key].float()) / 3
        assert mean[key].dtype == torch.float16
        torch.testing.assert_close(mean[key].float(), expected, rtol=0, atol=1e-3)
    assert mean["lora_unet_a.alpha"].item() == 4.0
    with safe_open(out, framework="pt") as f:
        training = json.loads(f.metadata()["nodeflow_training"])
    assert training["step"] == "mean of the saves at steps 100, 200, 300"
    assert training["rank"] == "2"


def test_files_that_do_not_line_up_are_refused_by_name(tmp_path):
    _save(tmp_path / "a.safetensors", 0, 1)
    _save(tmp_path / "b.safetensors", 1, 2, alpha=8.0)
    _save(tmp_path / "c.safetensors", 2, 3, rank=3)
    with pytest.raises(ValueError, match=r"b\.safetensors: lora_unet_a\.alpha"):
        average_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(ValueError, match=r"c\.safetensors: lora_unet_a\.lora_down\.weight has"):
        average_files([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
    with pytest.raises(ValueError, match="at least two"):
        average_files([tmp_path / "a.safetensors"])
