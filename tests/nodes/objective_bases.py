"""What the LoRA-trainer objective tests share: micro demo base folders on either objective (an
epsilon one as ``train_demo`` writes it, and a copy whose scheduler config is edited to zero
terminal SNR and v-prediction, as a ``v-zero-snr`` run ships it), SD 1.x's alphas-cumprod from
the formulas, and a graph that samples a base with a trained LoRA through ``LoadLoRA``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodes.demo.train_demo import ModelSizes, build_models, save_diffusers_folder

V_ZERO_SNR_KEYS = {
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}
"""What ``train_grow --objective v-zero-snr`` writes into its folder's scheduler config
(TRAINING.md, "demo v2z"), written out here rather than taken from ``scheduler_overrides``."""


def write_bases(root: Path) -> dict[str, Path]:
    """{objective: folder}: a micro demo model (random weights, fp32) saved as the epsilon demo
    is, and a copy of it edited to zero-SNR v-prediction."""
    models = build_models(ModelSizes.micro(), seed=4)
    epsilon = root / "eps-base"
    save_diffusers_folder(models, epsilon, half=False)
    zero = root / "v-zero-snr-base"
    shutil.copytree(epsilon, zero)
    edit_scheduler_config(zero, V_ZERO_SNR_KEYS | {"_class_name": "DDIMScheduler"})
    return {"epsilon": epsilon, "v-zero-snr": zero}


def edit_scheduler_config(
    folder: Path, changes: dict[str, Any], drop: tuple[str, ...] = ()
) -> Path:
    """Set ``changes`` (and remove ``drop``) in ``folder``'s scheduler config; returns its path."""
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text()) | changes
    for key in drop:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2))
    return path


def sd_alphas_cumprod(zero_terminal_snr: bool) -> torch.Tensor:
    """alpha_bar_t of SD 1.x's scaled-linear betas (0.00085 to 0.012 over 1000 steps, linear in
    sqrt(beta)), optionally rescaled to zero terminal SNR by diffusers' Lin et al. helper."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return torch.cumprod(1 - betas, dim=0)


def sample_with_lora(
    catalog: Any,
    runtime: Any,
    base: Path,
    lora: Path,
    root: Path,
    strength: float,
    scheduler: str = "euler",
    scale: float = 7.5,
) -> np.ndarray:
    """Pixels of ``base`` + ``lora`` at ``strength`` (2 steps of ``scheduler``, 32x32, seed 3),
    the LoRA read by the ``LoadLoRA`` node from the models folder's ``loras/``."""
    from sdgraphs import sd_graph

    from nodeflow.context import Environment
    from nodeflow.executor import Executor
    from nodeflow.workflow import Workflow

    (root / "models" / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lora, root / "models" / "loras" / lora.name)
    doc = sd_graph(checkpoint=str(base), scheduler=scheduler, steps=2, scale=scale, seed=3,
                   width=32, height=32, save=False).to_json()  # fmt: skip
    nodes = doc["nodes"]
    nodes["lora"] = {
        "type": "LoadLoRA",
        "inputs": {"unet": {"from": "model.unet"}, "text_encoder": {"from": "model.text_encoder"},
                   "path": lora.name, "strength_unet": strength,
                   "strength_text_encoder": strength},
    }  # fmt: skip
    for node_id in ("pos", "neg", "sched", "cfg"):
        inputs = nodes[node_id]["inputs"]
        for socket in ("unet", "text_encoder"):
            if socket in inputs:
                inputs[socket] = {"from": f"lora.{socket}"}
    env = Environment.from_dirs(root / "models", root / "out", root / "in")
    result = Executor(catalog, env=env, runtime=runtime).run(
        Workflow.from_json(doc), targets=["decode"]
    )
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()
