"""Train ``demo-clip-noised``: GLIDE's noised CLIP for the demo world, an image tower over the
demo U-Net's noisy latents contrastive against ``demo-clip``'s text tower.

    python -m nodes.demo.train_clip_noised --out build/demo-clip-noised --threads 1

What it learns from: scenes of the training split only (``nodes.demo.dataset``; held-out
captions stay unseen), rendered and encoded by the shipped demo VAE (``--pool`` scenes, encoded
once at the start: the posterior's mean and standard deviation, so every step still draws a
fresh posterior sample, times the VAE's scaling factor, exactly as the U-Net was trained), then
noised at uniform timesteps by the same DDPM schedule (``train_demo.noise_scheduler``).

The text tower is ``demo-clip``'s, copied and frozen: its space already separates the demo's
captions (``demo-clip/README.md``), so the image tower only has to learn to read noisy latents
into it, and a prompt means the same thing to both CLIPs. The loss is CLIP's symmetric InfoNCE
with a learned temperature, where each picture also brings one hard-negative caption (its scene
with one attribute changed, ``nodes.demo.variants``) into the image-to-text softmax, and equal
captions in a batch are all positives (``train_clip.contrastive_loss``'s recipe).

Deterministic and resumable: the pool comes from ``--seed``; step ``k``'s picks, posterior
sample, noise, timesteps and hard negatives come from generators seeded by (seed, k) alone, and
the state (tower, temperature, AdamW moments, step, seconds) is saved every ``--save-every``
steps (``nodes.demo.run_state``: safetensors and JSON, no pickle). Rerunning the command
continues from it with exactly the batches an uninterrupted run would have drawn.
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

from nodes.demo.dataset import Scene, caption, render, sample_scene
from nodes.demo.run_state import (
    load_run_state,
    module_tensors,
    optimizer_state_tensors,
    restore_module,
    restore_optimizer_state,
    save_run_state,
)
from nodes.demo.variants import random_variant, variants
from nodes.noised_clip import IMAGE_TOWER, NoisedImageTower, TowerConfig, save_image_tower

__all__ = ["LatentPool", "TextCache", "contrastive_loss", "main", "noised_batch"]

MODELS = Path(__file__).resolve().parent / "model"
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


class LatentPool:
    """``size`` training-split scenes, rendered and encoded once: (scenes, posterior mean and
    standard deviation [size, c, h, w]), so a step costs no VAE pass."""

    def __init__(self, vae: Any, seed: int, size: int, chunk: int = 128) -> None:
        rng = random.Random(seed)
        self.scenes: list[Scene] = [sample_scene(rng, split="train") for _ in range(size)]
        self.captions = [caption(scene) for scene in self.scenes]
        means, stds = [], []
        for start in range(0, size, chunk):
            pictures = [render(s) for s in self.scenes[start : start + chunk]]
            array = np.stack([np.asarray(p, dtype=np.float32) for p in pictures])
            pixels = torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1
            with torch.no_grad():
                posterior = vae.encode(pixels).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
        self.mean, self.std = torch.cat(means), torch.cat(stds)
        self.scaling = float(vae.config.scaling_factor)


class TextCache:
    """Normalised text-tower embeddings by caption (the tower is frozen, so each is computed
    once)."""

    def __init__(self, text_model: Any, tokenizer: Any) -> None:
        self.text_model, self.tokenizer = text_model, tokenizer
        self._features: dict[str, torch.Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        from nodes.clip_vocab import MODEL_MAX_LENGTH

        missing = [text for text in dict.fromkeys(captions) if text not in self._features]
        if missing:
            ids = self.tokenizer(
                missing,
                padding="max_length",
                max_length=MODEL_MAX_LENGTH,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            with torch.no_grad():
                embeds = self.text_model(input_ids=ids).text_embeds
            for text, row in zip(
                missing, torch.nn.functional.normalize(embeds, dim=-1), strict=True
            ):
                self._features[text] = row
        return torch.stack([self._features[text] for text in captions])


def noised_batch(
    pool: LatentPool, schedule: Any, seed: int, step: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Step ``step``'s (noisy latents, timesteps, captions, hard-negative captions), from
    generators seeded by (seed, step) alone."""
    key = seed * 1_000_003 + step
    generator = torch.Generator().manual_seed(key)
    rng = random.Random(key)
    picks = torch.randint(0, len(pool.scenes), (size,), generator=generator)
    eps = torch.randn(pool.mean[picks].shape, generator=generator)
    latents = (pool.mean[picks] + pool.std[picks] * eps) * pool.scaling
    steps = schedule.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (size,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    noisy = schedule.add_noise(latents, noise, timesteps)
    scenes = [pool.scenes[i] for i in picks.tolist()]
    negatives = [caption(random_variant(scene, rng)) for scene in scenes]
    return noisy, timesteps, [caption(s) for s in scenes], negatives


def _soft_targets(rows: Sequence[str], columns: Sequence[str]) -> torch.Tensor:
    same = torch.tensor([[r == c for c in columns] for r in rows], dtype=torch.float32)
    return same / same.sum(dim=1, keepdim=True)


def contrastive_loss(
    image: torch.Tensor,
    logit_scale: torch.Tensor,
    texts: TextCache,
    captions: Sequence[str],
    negatives: Sequence[str],
) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarities times the learned temperature: image -> text
    over the batch's captions and hard negatives, text -> image over the batch's latents."""
    image = torch.nn.functional.normalize(image, dim=-1)
    columns = [*captions, *negatives]
    logits = logit_scale.exp() * image @ texts(columns).T
    image_to_text = torch.nn.functional.cross_entropy(logits, _soft_targets(captions, columns))
    text_to_image = torch.nn.functional.cross_entropy(
        logits[:, : len(captions)].T, _soft_targets(captions, captions)
    )
    return (image_to_text + text_to_image) / 2


def _lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def evaluate(
    tower: NoisedImageTower, vae: Any, schedule: Any, texts: TextCache, seed: int, scenes: int
) -> dict[str, float]:
    """On held-out scenes (captions never trained on: ``adherence.held_out_scenes``), each
    noised at every timestep of (100, 300, 500, 700, 900): per attribute, how often the true
    caption is nearer than every one-word variant of that attribute; and overall, than every
    variant at once. Chance is well below half for every attribute."""
    from nodes.demo.adherence import held_out_scenes
    from nodes.demo.variants import ATTRIBUTES

    held_out = held_out_scenes(scenes, seed)
    generator = torch.Generator().manual_seed(seed)
    pictures = [render(scene) for scene in held_out]
    array = np.stack([np.asarray(p, dtype=np.float32) for p in pictures])
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
    results: dict[str, float] = {}
    tower.eval()
    for t in (100, 300, 500, 700, 900):
        timesteps = torch.full((len(held_out),), t)
        noise = torch.randn(latents.shape, generator=generator)
        with torch.no_grad():
            image = tower(schedule.add_noise(latents, noise, timesteps), timesteps)
        image = torch.nn.functional.normalize(image, dim=-1)
        wins = {attribute: [0, 0] for attribute in ("all", *ATTRIBUTES)}
        for row, scene in zip(image, held_out, strict=True):
            own = float(row @ texts([caption(scene)])[0])
            every = True
            for attribute in ATTRIBUTES:
                others = variants(scene, attribute)
                if not others:
                    continue
                nearer = bool((texts([caption(o) for o in others]) @ row < own).all())
                wins[attribute][0] += int(nearer)
                wins[attribute][1] += 1
                every = every and nearer
            wins["all"][0] += int(every)
            wins["all"][1] += 1
        for attribute, (won, total) in wins.items():
            results[f"t{t}_{attribute}"] = round(won / max(1, total), 4)
    tower.train()
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for state and model")
    parser.add_argument("--model", type=Path, default=MODELS / "demo-sd", help="demo-sd folder")
    parser.add_argument("--clip", type=Path, default=MODELS / "demo-clip", help="text tower's")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool", type=int, default=12800, help="training scenes encoded")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-scenes", type=int, default=400)
    return parser.parse_args(argv)


def _state(tower: NoisedImageTower, logit_scale: torch.Tensor, optimizer: Any) -> dict:
    return {
        **module_tensors("tower", tower),
        "logit_scale": logit_scale.detach().clone().reshape(()),
        **optimizer_state_tensors(optimizer),
    }


def write_folder(
    out: Path, clip: Path, tower: NoisedImageTower, logit_scale: torch.Tensor, extra: dict
) -> int:
    """The shipped folder: the text tower as ``demo-clip`` ships it (fp16), the image tower
    beside it. No tokenizer files: the loader falls back to the real CLIP tokenizer nodeflow
    ships (``nodes.clip_vocab``, the one both towers were trained with), which saves 1.5 MB of
    the package's model budget. Returns the folder's weight bytes."""
    from transformers import CLIPTextModelWithProjection

    text = CLIPTextModelWithProjection.from_pretrained(clip, local_files_only=True)
    text.half().save_pretrained(out)
    size = save_image_tower(tower, logit_scale, out / IMAGE_TOWER, extra)
    return size + (out / "model.safetensors").stat().st_size


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModelWithProjection

    from nodes.clip_vocab import clip_tokenizer
    from nodes.demo.train_demo import noise_scheduler

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.model / "vae", torch_dtype=torch.float32)
    vae.eval().requires_grad_(False)
    text_model = CLIPTextModelWithProjection.from_pretrained(
        args.clip, local_files_only=True, dtype=torch.float32
    )
    text_model.eval().requires_grad_(False)
    texts = TextCache(text_model, clip_tokenizer())
    schedule = noise_scheduler()
    config = TowerConfig(
        projection=int(text_model.config.projection_dim),
        in_channels=int(vae.config.latent_channels),
        width=args.width,
        num_train_timesteps=int(schedule.config.num_train_timesteps),
        trained_for="demo",
    )
    tower = NoisedImageTower(config)
    logit_scale = torch.nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))
    optimizer = torch.optim.AdamW(
        [
            {"params": list(tower.parameters()), "weight_decay": 0.01},
            {"params": [logit_scale], "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    state_dir = args.out / "state"
    start, seconds, losses = 0, 0.0, []
    saved = load_run_state(state_dir)
    if saved is not None:
        tensors, meta = saved
        restore_module("tower", tower, tensors)
        with torch.no_grad():
            logit_scale.copy_(tensors["logit_scale"])
        restore_optimizer_state(optimizer, tensors)
        start, seconds, losses = meta["step"], meta["seconds"], meta["losses"]
        print(f"resumed at step {start}", flush=True)
    pool = LatentPool(vae, args.seed, args.pool) if start < args.steps else None
    started = time.perf_counter() - seconds
    tower.train()
    for step in range(start, args.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, args.steps, args.warmup, args.lr)
        noisy, timesteps, captions, negatives = noised_batch(
            pool, schedule, args.seed, step, args.batch_size
        )
        loss = contrastive_loss(tower(noisy, timesteps), logit_scale, texts, captions, negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*tower.parameters(), logit_scale], 1.0)
        optimizer.step()
        with torch.no_grad():
            logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        done = step + 1
        if step % args.log_every == 0 or done == args.steps:
            losses.append([step, round(loss.item(), 5)])
            per_step = (time.perf_counter() - started) / done
            print(f"clip-noised {step:5d}  loss {loss.item():.4f}  temperature "
                  f"{logit_scale.exp().item():.1f}  {per_step:.3f} s/step", flush=True)  # fmt: skip
        if done % args.save_every == 0 or done == args.steps:
            meta = {
                "step": done,
                "seconds": time.perf_counter() - started,
                "losses": losses,
                "args": {k: str(v) for k, v in vars(args).items()},
            }
            save_run_state(state_dir, _state(tower, logit_scale, optimizer), meta)
    minutes = (time.perf_counter() - started) / 60
    scores = evaluate(tower, vae, schedule, texts, 12345, args.eval_scenes)
    summary = {
        "steps": args.steps,
        "minutes": round(minutes, 2),
        "parameters_image_tower": sum(p.numel() for p in tower.parameters()),
        "temperature": round(logit_scale.exp().item(), 3),
        "held_out": scores,
        "losses": losses,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    extra = {"nodeflow_training": json.dumps({k: v for k, v in summary.items() if k != "losses"})}
    summary["weights_bytes"] = write_folder(args.out, args.clip, tower, logit_scale.data, extra)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("minutes", "held_out", "weights_bytes")}), flush=True)
    return summary


if __name__ == "__main__":
    main()
