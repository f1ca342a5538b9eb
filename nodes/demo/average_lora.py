"""Average the saves of one LoRA training run into one LoRA (weight averaging, as in SWA).

Run from the repository root (not run by CI)::

    python -m nodes.demo.average_lora --out build/demo-lcm-avg.safetensors \\
        build/lcm-b/lora-00200.safetensors build/lcm-b/lora-00300.safetensors ...

Why: the 4-step score of consecutive saves of one ``train_lcm`` run moves by several points on
the same captions, and the element-wise mean of a run's later saves scored above every save it
was made of, on 100 validation captions (nodes/demo/TRAINING.md). Averaging the parameters of
points along one trajectory is what stochastic weight averaging does. The saves must come from
one run, so that their factors share one basis (every save starts from the same ``down``
initialisation and moves slowly); that is what makes the mean of the ``down`` and ``up`` factors
a sensible LoRA of the same rank and size. Files from different runs or seeds are not refused,
but their mean is not meaningful.

Every file must have the same keys, shapes and ``alpha`` values; the mean is taken in float32 and
written in each tensor's stored dtype, with the last file's training metadata plus the list of
averaged files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = ["average_files", "main"]


def average_files(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the LoRA files' tensors; ``alpha`` entries must agree exactly."""
    if len(paths) < 2:
        raise ValueError("give at least two LoRA files to average")
    first = load_file(paths[0])
    sums = {key: value.float().clone() for key, value in first.items()}
    for path in paths[1:]:
        tensors = load_file(path)
        if tensors.keys() != first.keys():
            missing = sorted(first.keys() ^ tensors.keys())[:3]
            raise ValueError(f"{path}: its keys differ from {paths[0]}'s (e.g. {missing})")
        for key, value in tensors.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(value.shape)}, "
                    f"{paths[0]} has {tuple(first[key].shape)}"
                )
            if key.endswith(".alpha") and not torch.equal(value, first[key]):
                raise ValueError(f"{path}: {key} is {value.item()}, {paths[0]} has {first[key]}")
            sums[key] += value.float()
    count = len(paths)
    return {k: (v / count).to(first[k].dtype).contiguous() for k, v in sums.items()}


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="the saves of one run")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors to write")
    args = parser.parse_args(argv)
    averaged = average_files(args.files)
    with safe_open(args.files[-1], framework="pt") as f:
        metadata = dict(f.metadata() or {})
    training = json.loads(metadata.get("nodeflow_training", "{}"))
    steps = [json.loads(_training(path)).get("step") for path in args.files]
    training["step"] = "mean of the saves at steps " + ", ".join(str(s) for s in steps)
    metadata["nodeflow_training"] = json.dumps(training)
    metadata["nodeflow_averaged"] = json.dumps([p.name for p in args.files])
    metadata.setdefault("format", "pt")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(averaged, args.out, metadata=metadata)
    print(f"{args.out}: the mean of {len(args.files)} files ({training['step']})", flush=True)
    return args.out


def _training(path: Path) -> str:
    with safe_open(path, framework="pt") as f:
        return (f.metadata() or {}).get("nodeflow_training", "{}")


if __name__ == "__main__":
    main()
