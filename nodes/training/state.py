"""A training run's resumable state, written without pickle: safetensors + JSON.

``<loras>/<name>.state/`` holds ``state.safetensors`` (the LoRA pairs in float32, the AdamW
moments and step counts, the preview rows as uint8) and ``state.json`` (the step reached, the
settings that must match to resume, the optimizer's hyper-parameters, the preview steps and the
loss history). PyTorch's own ``torch.save`` of an optimizer is a pickle, which can run code when
loaded; tensors and JSON cannot. Both files are written to a temporary name and renamed, so an
interrupt or a crash mid-write leaves the previous state whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


@dataclass
class SavedState:
    """What a resumed run starts from."""

    step: int
    config: dict[str, Any]
    pairs: dict[str, torch.Tensor]
    """``<module>.down`` / ``<module>.up`` float32 tensors."""
    optimizer: dict[str, Any]
    """An ``Optimizer.state_dict()`` rebuilt from the files."""
    preview_steps: list[int] = field(default_factory=list)
    previews: torch.Tensor | None = None
    """uint8 [rows, prompts, height, width, 3], one row per preview step."""
    losses: list[float] = field(default_factory=list)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, **metadata: str) -> None:
    """``save_file`` to a temporary name beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata or None)
    os.replace(temporary, path)


def _atomic_write_text(text: str, path: Path) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def save_state(folder: Path, state: SavedState) -> None:
    """Write ``state`` into ``folder`` (tensors first, then the JSON that points at them)."""
    tensors = {f"pair.{k}": v.detach().cpu().contiguous() for k, v in state.pairs.items()}
    per_param: dict[str, list[str]] = {}
    for index, values in state.optimizer["state"].items():
        per_param[str(index)] = sorted(values)
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{index}.{key}"] = tensor.detach().cpu().contiguous()
    if state.previews is not None:
        tensors["previews"] = state.previews.contiguous()
    atomic_save_tensors(tensors, folder / STATE_TENSORS)
    document = {
        "step": state.step,
        "config": state.config,
        "optimizer_groups": state.optimizer["param_groups"],
        "optimizer_state_keys": per_param,
        "preview_steps": state.preview_steps,
        "losses": state.losses,
    }
    _atomic_write_text(json.dumps(document, indent=1, sort_keys=True), folder / STATE_JSON)


def load_state(folder: Path) -> SavedState | None:
    """The state saved in ``folder``, or None when there is none."""
    if not (folder / STATE_JSON).is_file() or not (folder / STATE_TENSORS).is_file():
        return None
    document = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(folder / STATE_TENSORS))
    pairs = {k[len("pair.") :]: v for k, v in tensors.items() if k.startswith("pair.")}
    optimizer_state = {
        int(index): {key: tensors[f"opt.{index}.{key}"] for key in keys}
        for index, keys in document["optimizer_state_keys"].items()
    }
    return SavedState(
        step=int(document["step"]),
        config=document["config"],
        pairs=pairs,
        optimizer={"state": optimizer_state, "param_groups": document["optimizer_groups"]},
        preview_steps=list(document.get("preview_steps", [])),
        previews=tensors.get("previews"),
        losses=[float(x) for x in document.get("losses", [])],
    )
