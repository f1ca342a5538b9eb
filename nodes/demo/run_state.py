"""A training run's whole state on disk, without pickle, so a long run can stop and continue.

Tensors (weights, EMA shadows, AdamW moments, the torch generator) go to one safetensors file and
everything else (step, Python RNG state, arguments, seconds spent) to a JSON file; both are
written under a temporary name and renamed into place, so a run killed mid-save keeps its last
good state. What a resumed run then does is exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "load_run_state",
    "module_tensors",
    "optimizer_state_tensors",
    "optimizer_tensors",
    "python_rng_state",
    "restore_module",
    "restore_optimizer",
    "restore_optimizer_state",
    "restore_python_rng",
    "save_run_state",
]

STATE = "state.safetensors"
META = "state.json"


def optimizer_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """AdamW's moments by parameter index (tensors) and its per-parameter step counts (JSON)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tensors: dict[str, torch.Tensor] = {}
    steps: dict[str, float] = {}
    for i, param in enumerate(params):
        state = optimizer.state.get(param, {})
        if state:
            tensors[f"adam.{i}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"adam.{i}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
            steps[str(i)] = float(state["step"])
    return tensors, steps


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], steps: dict[str, float]
) -> None:
    """Put back what ``optimizer_tensors`` took out (same parameter order)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, step in steps.items():
        param = params[int(index)]
        optimizer.state[param] = {
            "step": torch.tensor(step, dtype=torch.float32),
            "exp_avg": tensors[f"adam.{index}.exp_avg"].to(param.device),
            "exp_avg_sq": tensors[f"adam.{index}.exp_avg_sq"].to(param.device),
        }


def optimizer_state_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer"
) -> dict[str, torch.Tensor]:
    """Every entry of ``optimizer.state_dict()["state"]`` (moments and step counts alike, for any
    torch optimizer) as ``prefix.<parameter index>.<name>`` tensors. The parameter groups are
    not saved: a resumed run makes its optimizer the same way and sets its rate by the step."""
    return {
        f"{prefix}.{index}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
        for index, values in optimizer.state_dict()["state"].items()
        for name, value in values.items()
    }


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str = "optimizer",
    param_groups: list[dict[str, Any]] | None = None,
) -> None:
    """Put back what ``optimizer_state_tensors`` took out, into an optimizer made like the saved
    one (``param_groups``: saved groups to restore too; default the optimizer's own)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = optimizer.state_dict()["param_groups"] if param_groups is None else param_groups
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict under ``prefix.``, on the CPU, contiguous (as safetensors wants)."""
    return {
        f"{prefix}.{key}": value.detach().cpu().contiguous()
        for key, value in module.state_dict().items()
    }


def restore_module(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the ``prefix.`` entries of ``tensors`` into ``module`` (strictly: every key)."""
    start = len(prefix) + 1
    module.load_state_dict({k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})


def python_rng_state(rng: random.Random) -> list[Any]:
    """``random.Random`` state as JSON-able lists."""
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def restore_python_rng(rng: random.Random, saved: Sequence[Any]) -> None:
    version, state, gauss = saved
    rng.setstate((version, tuple(state), gauss))


def save_run_state(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``out/state.safetensors`` and ``out/state.json`` atomically (rename into place)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / (STATE + ".tmp"))
    (out / (META + ".tmp")).write_text(json.dumps(meta), encoding="utf-8")
    (out / (STATE + ".tmp")).replace(out / STATE)
    (out / (META + ".tmp")).replace(out / META)


def load_run_state(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The saved state of the run in ``out``, or None when it has none yet."""
    if not (out / META).is_file() or not (out / STATE).is_file():
        return None
    return load_file(out / STATE), json.loads((out / META).read_text(encoding="utf-8"))
