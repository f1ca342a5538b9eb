"""ClassifierGuidance and LoadClassifier through the executor on the demo model, the classifier
file format, and the demo classifier's training (deterministic, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.workflow import Workflow
from nodes.latent_classifier import (
    ClassifierConfig,
    LatentClassifier,
    load_classifier,
    save_classifier,
)

CLASSIFIER = "tiny-classifier.safetensors"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    """A models dir with a random 4-channel classifier of three classes, and a 3-channel one."""
    root = tmp_path_factory.mktemp("guidance")
    torch.manual_seed(0)
    model = LatentClassifier(ClassifierConfig(labels=("red", "green", "blue"), width=8, groups=4))
    save_classifier(model, root / "models" / "classifiers" / CLASSIFIER)
    three = LatentClassifier(ClassifierConfig(labels=("a", "b"), in_channels=3, width=8, groups=4))
    save_classifier(three, root / "models" / "classifiers" / "three-channel.safetensors")
    return Environment.from_dirs(root / "models", root / "output", root / "input")


@pytest.fixture(scope="module")
def executor(sd_catalog: Any, runtime: Any, env: Environment) -> Executor:
    return Executor(sd_catalog, env=env, runtime=runtime)


def workflow(guided: bool, *, scale: float = 0.0, label: int = 1, cfg: float = 7.5,
             classifier: str = CLASSIFIER, scheduler: str = "euler") -> Workflow:  # fmt: skip
    nodes: dict[str, Any] = {
        "model": {"type": "LoadCheckpoint", "inputs": {"path": "demo"}},
        "pos": {"type": "TextEncode", "inputs": {"text_encoder": {"from": "model.text_encoder"},
                                                 "text": "a large circle on a white background"}},
        "neg": {"type": "TextEncode", "inputs": {"text_encoder": {"from": "model.text_encoder"},
                                                 "text": ""}},
        "sched": {"type": "Scheduler", "inputs": {"unet": {"from": "model.unet"},
                                                  "name": scheduler, "steps": 4}},
        "cfg": {"type": "CFG", "inputs": {"unet": {"from": "model.unet"},
                                          "positive": {"from": "pos.conditioning"},
                                          "negative": {"from": "neg.conditioning"}, "scale": cfg}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "denoise": {"type": "Denoise", "inputs": {"guider": {"from": "cfg.guider"},
                                                  "scheduler": {"from": "sched.scheduler"},
                                                  "latent": {"from": "empty.latent"}, "seed": 5}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "model.vae"},
                                                   "latent": {"from": "denoise.latent"}}},
    }  # fmt: skip
    if guided:
        nodes["clf"] = {"type": "LoadClassifier", "inputs": {"path": classifier}}
        nodes["guide"] = {
            "type": "ClassifierGuidance",
            "inputs": {"guider": {"from": "cfg.guider"}, "classifier": {"from": "clf.classifier"},
                       "label": label, "scale": scale},
        }  # fmt: skip
        nodes["denoise"]["inputs"]["guider"] = {"from": "guide.guider"}
    return Workflow.from_json({"version": 1, "nodes": nodes})


def pixels(executor: Executor, flow: Workflow) -> torch.Tensor:
    result = executor.run(flow, targets=["decode"])
    assert result.status == "finished", result.error
    return result.values["decode"]["image"].pixels


@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_scale_zero_gives_exactly_the_plain_guiders_pixels(executor, scheduler) -> None:
    plain = pixels(executor, workflow(False, scheduler=scheduler))
    zero = pixels(executor, workflow(True, scale=0.0, scheduler=scheduler))
    assert torch.equal(plain, zero)
    guided = pixels(executor, workflow(True, scale=200.0, scheduler=scheduler))
    assert (guided - plain).abs().max() > 1e-3


def test_unconditional_sampling_is_guided_too(executor) -> None:
    """CFG at scale 1 is one pass on the (empty) prompt: the classifier alone steers."""
    plain = pixels(executor, workflow(False, cfg=1.0))
    zero = pixels(executor, workflow(True, cfg=1.0, scale=0.0))
    guided = pixels(executor, workflow(True, cfg=1.0, scale=200.0))
    assert torch.equal(plain, zero)
    assert (guided - plain).abs().max() > 1e-3


def test_a_label_out_of_range_fails_naming_the_node_and_input(executor) -> None:
    result = executor.run(workflow(True, scale=1.0, label=3), targets=["decode"])
    assert result.status == "failed"
    assert result.error.node == "guide"
    assert "input 'label'" in result.error.message and "3 classes" in result.error.message


def test_a_classifier_of_other_latents_fails_naming_the_node_and_input(executor) -> None:
    flow = workflow(True, scale=1.0, label=0, classifier="three-channel.safetensors")
    result = executor.run(flow, targets=["decode"])
    assert result.status == "failed"
    assert result.error.node == "guide"
    assert "input 'classifier'" in result.error.message
    assert "3-channel" in result.error.message and "4-channel" in result.error.message


def test_a_classifier_file_round_trips_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = LatentClassifier(ClassifierConfig(labels=("x", "y"), width=8, groups=4))
    save_classifier(model, tmp_path / "c.safetensors")
    loaded = load_classifier(tmp_path / "c.safetensors")
    assert loaded.config == model.config
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 900.0])
    assert torch.equal(loaded(latents, t), model.eval()(latents, t))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors: not a classifier file"):
        load_classifier(tmp_path / "other.safetensors")


def _train(out: Path, steps: int) -> None:
    from nodes.demo.train_classifier import main

    main(["--out", str(out), "--steps", str(steps), "--batch-size", "4", "--width", "8",
          "--warmup", "1", "--save-every", "1", "--eval-batches", "1"])  # fmt: skip


def test_training_is_deterministic_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    _train(tmp_path / "straight", 2)
    _train(tmp_path / "resumed", 1)
    _train(tmp_path / "resumed", 2)  # picks up its state after step 1
    _train(tmp_path / "again", 2)
    straight = load_file(str(tmp_path / "straight" / "demo-classifier.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "demo-classifier.safetensors"))
    again = load_file(str(tmp_path / "again" / "demo-classifier.safetensors"))
    assert straight.keys() == resumed.keys() == again.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
        assert torch.equal(value, again[key]), key
    assert load_classifier(tmp_path / "straight" / "demo-classifier.safetensors").num_classes == 8
