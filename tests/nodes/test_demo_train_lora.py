"""The style-LoRA trainer's layer choice and saves (``nodes.demo.train_lora``,
``nodes.demo.lora_layers``), on a micro demo model the real trainer makes in seconds."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nodes.demo.lora_layers import PROJECTIONS, RESNET_TARGETS, TARGETS, target_names


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = importlib.import_module("nodes.demo.train_demo")
    out = tmp_path_factory.mktemp("style-micro") / "model"
    steps = ["--steps", "1", "--vae-steps", "1", "--batch-size", "2", "--vae-batch-size", "2"]
    quiet = ["--eval-samples", "0", "--device", "cpu", "--threads", "1", "--log-every", "1000"]
    trainer.main(["--out", str(out), "--micro", *steps, *quiet])
    return out


def test_target_sets_grow_from_projections_to_all() -> None:
    assert target_names("projections") == PROJECTIONS
    assert set(PROJECTIONS) < set(target_names("attention")) == set(TARGETS)
    assert set(target_names("all")) == set(TARGETS) | set(RESNET_TARGETS)
    with pytest.raises(ValueError, match="projections, attention, all"):
        target_names("everything")


def test_the_default_keeps_the_first_loras_layers(micro: Path) -> None:
    lora = importlib.import_module("nodes.demo.train_lora")
    base = lora.load_base(micro, torch.device("cpu"))
    pairs = lora.add_lora(base.unet, rank=2, alpha=2.0)
    assert pairs and all(name.endswith(PROJECTIONS) for name in pairs)


def test_all_targets_train_convolutions_and_saves_go_beside_the_file(
    micro: Path, tmp_path: Path
) -> None:
    from nodes.lora import read_lora_file, resolve_lora

    lora = importlib.import_module("nodes.demo.train_lora")
    out = tmp_path / "style.safetensors"
    common = ["--base", str(micro), "--rank", "2", "--alpha", "2", "--batch-size", "2"]
    lora.main([*common, "--out", str(out), "--targets", "all", "--steps", "2",
               "--save-every", "1", "--device", "cpu", "--threads", "1"])  # fmt: skip
    first, second = lora.save_path(out, 1), lora.save_path(out, 2)
    assert first.name == "style-00001.safetensors" and first.is_file()
    final = load_file(out)
    assert final.keys() == load_file(first).keys()
    assert all(torch.equal(final[k], v) for k, v in load_file(second).items())
    assert not all(torch.equal(final[k], v) for k, v in load_file(first).items())
    with safe_open(second, framework="pt") as f:
        assert json.loads(f.metadata()["nodeflow_training"])["step"] == 2
    assert {v.dtype for k, v in final.items() if not k.endswith(".alpha")} == {torch.float16}
    convs = [k for k, v in final.items() if k.endswith("lora_down.weight") and v.ndim == 4]
    assert any("_conv1." in k for k in convs) and any("proj_in" in k for k in convs)

    base = lora.load_base(micro, torch.device("cpu"))
    resolved = resolve_lora(read_lora_file(out), {"unet": base.unet})
    assert len(resolved["unet"]) == len([k for k in final if k.endswith(".alpha")])
