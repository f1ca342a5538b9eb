"""Train ``demo-classifier``: the color of a demo scene's shapes, read from noisy latents.

    python -m nodes.demo.train_classifier --out build/demo-classifier --threads 1

The attribute is the shapes' color because the evaluator measures it directly (``color_ok`` in
``nodes.demo.evaluate``), it has the most classes (eight) and, unlike shape, it is readable
from a 16x16 latent at every noise level the classifier can read anything at.

The data are the demo's own: scenes rendered by ``nodes.demo.dataset`` (training split only,
so held-out captions stay unseen), encoded by the shipped demo model's VAE (a posterior sample,
times its scaling factor, exactly as the U-Net was trained), noised at uniform timesteps by the
same DDPM schedule (``train_demo.noise_scheduler``).

Deterministic and resumable: step ``k``'s scenes, posterior sample, noise and timesteps come
from generators seeded by (seed, k) alone, so a run stopped after step ``k`` and resumed from
its checkpoint (weights, AdamW moments and the step count, all in one safetensors file: no
pickle) continues with exactly the batches an uninterrupted run would have drawn. The same
arguments and thread count give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodes.demo.dataset import COLORS, render, sample_scene
from nodes.demo.run_state import (
    module_tensors,
    optimizer_state_tensors,
    restore_module,
    restore_optimizer_state,
)
from nodes.latent_classifier import ClassifierConfig, LatentClassifier, save_classifier

__all__ = ["encode_batch", "main", "scene_batch"]

SHIPPED_MODEL = Path(__file__).resolve().parent / "model" / "demo-sd"


def scene_batch(seed: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels in -1..1 [size, 3, 64, 64], color indices [size]) for step ``step`` of ``seed``."""
    rng = random.Random(seed * 1_000_003 + step)
    pictures, labels = [], []
    for _ in range(size):
        scene = sample_scene(rng, split="train")
        pictures.append(np.asarray(render(scene), dtype=np.float32))
        labels.append(COLORS.index(scene.color))
    pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
    return pixels, torch.tensor(labels)


def encode_batch(
    vae: Any, schedule: Any, pixels: torch.Tensor, generator: torch.Generator
) -> tuple:
    """(noisy latents, timesteps): the VAE's posterior sample, scaled, noised as in training."""
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
    steps = schedule.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    return schedule.add_noise(latents, noise, timesteps), timesteps


def _lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _save_state(path: Path, model: LatentClassifier, optimizer: Any, step: int) -> None:
    """Weights, AdamW moments and the step in one safetensors file (atomically replaced)."""
    from safetensors.torch import save_file

    tensors = {**module_tensors("model", model), **optimizer_state_tensors(optimizer)}
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata={"step": str(step)})
    temporary.replace(path)


def _load_state(path: Path, model: LatentClassifier, optimizer: Any) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        step = int((handle.metadata() or {})["step"])
    tensors = load_file(str(path))
    restore_module("model", model, tensors)
    restore_optimizer_state(optimizer, tensors)
    return step


def evaluate(model: LatentClassifier, vae: Any, schedule: Any, seed: int, batches: int) -> dict:
    """Accuracy on fresh training-split scenes, overall and by noise level (timestep thirds)."""
    generator = torch.Generator().manual_seed(seed + 77)
    right = {"low": [0, 0], "mid": [0, 0], "high": [0, 0]}
    model.eval()
    for batch in range(batches):
        pixels, labels = scene_batch(seed + 1, batch, 64)
        noisy, timesteps = encode_batch(vae, schedule, pixels, generator)
        with torch.no_grad():
            hits = model(noisy, timesteps).argmax(dim=-1) == labels
        for t, hit in zip(timesteps.tolist(), hits.tolist(), strict=True):
            bucket = "low" if t < 333 else "mid" if t < 666 else "high"
            right[bucket][0] += int(hit)
            right[bucket][1] += 1
    model.train()
    total = sum(r[0] for r in right.values()) / sum(r[1] for r in right.values())
    return {"accuracy": total} | {f"accuracy_t_{k}": r[0] / max(1, r[1]) for k, r in right.items()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for state and model")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="demo-sd folder")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-batches", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    from nodes.demo.train_demo import noise_scheduler

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.model / "vae", torch_dtype=torch.float32)
    vae.eval().requires_grad_(False)
    schedule = noise_scheduler()
    config = ClassifierConfig(
        labels=COLORS,
        attribute="color",
        in_channels=int(vae.config.latent_channels),
        width=args.width,
        num_train_timesteps=int(schedule.config.num_train_timesteps),
        trained_for="demo",
    )
    model = LatentClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "state.safetensors"
    start = _load_state(state_path, model, optimizer) if state_path.is_file() else 0
    started = time.perf_counter()
    model.train()
    for step in range(start, args.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, args.steps, args.warmup, args.lr)
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        pixels, labels = scene_batch(args.seed, step, args.batch_size)
        noisy, timesteps = encode_batch(vae, schedule, pixels, generator)
        loss = torch.nn.functional.cross_entropy(model(noisy, timesteps), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if step % args.log_every == 0 or done == args.steps:
            per_step = (time.perf_counter() - started) / (done - start)
            print(
                f"classifier {step:5d}  loss {loss.item():.4f}  {per_step:.3f} s/step", flush=True
            )
        if done % args.save_every == 0 or done == args.steps:
            _save_state(state_path, model, optimizer, done)
    scores = evaluate(model, vae, schedule, args.seed, args.eval_batches)
    summary = {
        "steps": args.steps,
        "minutes_this_run": (time.perf_counter() - started) / 60,
        "parameters": sum(p.numel() for p in model.parameters()),
        **scores,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    save_classifier(
        model,
        args.out / "demo-classifier.safetensors",
        extra={"nodeflow_training": json.dumps(summary, sort_keys=True)},
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
