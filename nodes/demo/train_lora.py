"""Train the demo model's style LoRA: the outlined variant of the dataset, same captions.

Run from the repository root after ``nodes.demo.train_demo`` (not run by CI)::

    python -m nodes.demo.train_lora --base build/demo-sd --out build/demo-style.safetensors
    python -m nodes.demo.train_lora --base nodes/demo/model/demo-sd \
        --out build/style-a/style.safetensors --targets all --rank 16 --alpha 16 --save-every 200
        # demo-style v2's run (nodes/demo/TRAINING.md)

The base model is frozen; rank-``r`` pairs on the U-Net layers ``--targets`` names (by default
the attention projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0``, as the first style LoRA;
``all`` adds the convolutions, which drew outlines markedly better: TRAINING.md, "demo-style v2")
learn to draw outlines instead of filled shapes. Since the
captions do not name the style, the LoRA alone carries it, and its strength can be measured with
``nodes.demo.evaluate`` (outline score rising with strength). The file is written in kohya layout
(``lora_unet_<module>.lora_down/lora_up.weight`` + ``.alpha``), the layout model sites serve and
``nodes.lora`` reads; ``up`` starts at zero as in PEFT, so training starts from the base model.

The LoRA trains on its base's objective, read from the base folder's scheduler config
(``train_demo.objective_of``): epsilon on SD 1.x's schedule with Min-SNR weighting, as the shipped
demo was trained, or, for a zero-terminal-SNR v-prediction base (``train_grow --objective
v-zero-snr``), noise on the rescaled schedule and the v target, unweighted as that base was
trained. The objective is written into the file's metadata (``nodeflow_objective``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from nodes.demo.lora_layers import PROJECTIONS, ConvLoraPair, LoraPair, lora_pair, target_names
from nodes.demo.train_demo import (
    Batcher,
    adamw,
    choose_device,
    diffusion_step,
    load_base,
    noise_scheduler,
    objective_of,
)

__all__ = ["LoraPair", "add_lora", "kohya_state", "load_base", "save_lora"]

TARGETS = PROJECTIONS
"""The default ``--targets projections``: the first shipped style LoRA's layers."""


def add_lora(
    unet: nn.Module, rank: int, alpha: float, targets: Sequence[str] = TARGETS
) -> dict[str, LoraPair | ConvLoraPair]:
    """Attach trainable LoRA pairs to every ``targets`` linear or convolution of ``unet``
    (frozen). Returns {module name: pair}; the hooks stay for the model's life, so use a fresh
    model."""
    unet.requires_grad_(False)
    pairs: dict[str, LoraPair | ConvLoraPair] = {}
    ends = tuple("." + t for t in targets)
    for name, module in unet.named_modules():
        if not name.endswith(ends) or (pair := lora_pair(module, rank, alpha)) is None:
            continue
        pairs[name] = pair
        module.register_forward_hook(lambda _m, args, out, p=pair: out + p.delta(args[0]))
    if not pairs:
        raise ValueError(f"no {tuple(targets)} layers in the U-Net")
    return pairs


def kohya_state(pairs: Mapping[str, LoraPair | ConvLoraPair]) -> dict[str, torch.Tensor]:
    """The pairs in kohya layout: SD 1.x U-Net names are diffusers module names, dots to ``_``."""
    state: dict[str, torch.Tensor] = {}
    for name, pair in sorted(pairs.items()):
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"] = pair.down.weight.detach().to("cpu", torch.float16)
        state[f"{key}.lora_up.weight"] = pair.up.weight.detach().to("cpu", torch.float16)
        state[f"{key}.alpha"] = torch.tensor(float(pair.alpha))
    return {k: v.contiguous() for k, v in state.items()}


def save_lora(
    pairs: Mapping[str, LoraPair | ConvLoraPair],
    path: Path,
    args: argparse.Namespace,
    step: int,
    objective: str = "epsilon",
) -> None:
    """Write the pairs in kohya layout (fp16) with the run's arguments, step and the base's
    objective (``train_demo.OBJECTIVES``: the schedule the LoRA goes with) as metadata."""
    training = {k: str(v) for k, v in vars(args).items()} | {"step": step}
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "nodeflow_training": json.dumps(training),
                "nodeflow_objective": objective}  # fmt: skip
    save_file(kohya_state(pairs), path, metadata=metadata)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the trained demo model folder")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--targets", choices=("projections", "attention", "all"), default="projections",
        help="projections: attention q/k/v/out (the first LoRA); attention: also feed-forward and "
        "proj_in/proj_out; all: also the ResNet blocks' convolutions (nodes.demo.lora_layers)",
    )  # fmt: skip
    parser.add_argument(
        "--save-every", type=int, default=0,
        help="also write <out stem>-<step>.safetensors every N steps (0: only the final file), "
        "so a stopped run keeps its saves and saves can be averaged (nodes.demo.average_lora)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args(argv)


def save_path(out: Path, step: int) -> Path:
    """Where the save after ``step`` steps goes: beside ``out``, its stem plus the step."""
    return out.with_name(f"{out.stem}-{step:05d}{out.suffix}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    torch.manual_seed(args.seed)
    objective = objective_of(args.base)
    models = load_base(args.base, device)
    pairs = add_lora(models.unet, args.rank, args.alpha, target_names(args.targets))
    holder = nn.ModuleList(pairs.values())
    optimizer, parameters = adamw([holder], args.lr, weight_decay=0.0)
    scheduler = noise_scheduler(objective)
    # as the base was trained (train_grow): Min-SNR for epsilon, a plain v loss for zero SNR
    snr_gamma = 5.0 if objective == "epsilon" else None
    batches = Batcher(args.seed + 300, style="outlined")
    generator = torch.Generator(device).manual_seed(args.seed)
    started = time.perf_counter()
    for step in range(args.steps):
        pixels, ids, _ = batches(args.batch_size)
        loss = diffusion_step(
            models, scheduler, pixels.to(device), ids, optimizer, parameters,
            generator=generator, snr_gamma=snr_gamma,
        )  # fmt: skip
        if step % args.log_every == 0 or step == args.steps - 1:
            per_step = (time.perf_counter() - started) / (step + 1)
            print(f"lora {step:6d}  loss {loss:.5f}  {per_step:.3f} s/step", flush=True)
        if args.save_every and (step + 1) % args.save_every == 0:
            save_lora(pairs, save_path(args.out, step + 1), args, step + 1, objective)
    save_lora(pairs, args.out, args, args.steps, objective)
    summary = {
        "modules": len(pairs),
        "objective": objective,
        "minutes": (time.perf_counter() - started) / 60,
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
