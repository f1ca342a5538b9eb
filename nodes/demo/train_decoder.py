"""Fine-tune a trained demo model's VAE decoder, keeping its encoder and so its latent space.

Run from the repository root (not run by CI)::

    python -m nodes.demo.train_decoder --model build/demo-sd-2 --out build/demo-sd-3

Why: the rule-based evaluator reads the demo VAE's own reconstructions of real renders worse than
the U-Net's best pictures could ever be read (68% shape color, 18% shape on held-out scenes after
the 600 autoencoder steps of ``train_demo``): the decoder, not the U-Net, was the ceiling. As
Stability did for SD's ``ft-MSE`` VAE, only the decoder is trained further, on latents from the
frozen encoder, so the U-Net and text encoder (and any LoRA) stay valid unchanged. The output
folder is the input folder with ``vae/`` replaced; its ``training_summary.json`` gains a
``decoder`` entry and the model card a line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from nodes.demo.train_demo import Batcher, choose_device, lr_factor

__all__ = ["decoder_step", "main"]


def decoder_step(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    max_grad_norm: float = 1.0,
) -> float:
    """One step: reconstruct ``pixels`` from a posterior sample of the frozen encoder."""
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator)
    reconstruction = vae.decode(latents).sample
    loss = nn.functional.mse_loss(reconstruction, pixels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.decoder.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained demo model folder")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.model / "vae", torch_dtype=torch.float32).to(device)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=args.lr, weight_decay=0)
    batches = Batcher(args.seed + 500, style=None, dropout=0)
    generator = torch.Generator(device).manual_seed(args.seed)
    started = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup)
        loss = decoder_step(vae, batches(args.batch_size)[0].to(device), optimizer, generator)
        if step % args.log_every == 0 or step == args.steps - 1:
            per_step = (time.perf_counter() - started) / (step + 1)
            print(f"decoder {step:6d}  loss {loss:.5f}  {per_step:.3f} s/step", flush=True)
    minutes = (time.perf_counter() - started) / 60

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.model, args.out)
    shutil.rmtree(args.out / "vae")
    vae.eval().to("cpu").save_pretrained(args.out / "vae")
    summary_path = args.out / "training_summary.json"
    summary = json.loads(summary_path.read_text())
    command = "python -m nodes.demo.train_decoder " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    summary["decoder"] = {"minutes": minutes, "loss": loss, "command": command}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    card = args.out / "README.md"
    text = card.read_text(encoding="utf-8")
    text = text.replace(
        "\n```\n\nLicense:",
        f"\n{command}\n```\n\nThe VAE decoder was then fine-tuned for {args.steps} steps (encoder "
        f"frozen, {minutes:.1f} minutes, final MSE {loss:.4f}).\n\nLicense:",
    )
    card.write_text(text, encoding="utf-8")
    print(json.dumps(summary["decoder"]), flush=True)
    return summary["decoder"]


if __name__ == "__main__":
    main()
