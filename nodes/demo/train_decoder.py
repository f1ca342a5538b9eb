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

``--loss edge`` (issue 22) replaces the MSE with an L1 on the pixels plus ``--edge-weight`` times
an L1 on their Sobel gradients: MSE barely weighs the few pixels that make a small triangle's
corners (the demo decoder rounds them into blobs that read as circles), while a gradient term
charges every blurred edge. ``--save-every N`` writes ``<out>/checkpoints/step-N/vae`` along the
way so a ceiling can be measured mid-run (``tests/benchmarks/bench_vae_cap.py --vae``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL
from torch import nn

from nodes.demo.train_demo import Batcher, choose_device, lr_factor

__all__ = ["LOSSES", "decoder_step", "main", "reconstruction_loss", "sobel"]

Loss = Literal["mse", "edge"]
LOSSES: tuple[Loss, ...] = ("mse", "edge")

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def sobel(pixels: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel gradients per channel, ``[B, 2C, H, W]`` (replicate-padded
    so the picture's border is not read as an edge)."""
    channels = pixels.shape[1]
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(pixels)  # [2, 3, 3]
    kernel = kernel.repeat(channels, 1, 1).unsqueeze(1)  # [2C, 1, 3, 3]
    padded = nn.functional.pad(pixels, (1, 1, 1, 1), mode="replicate")
    return nn.functional.conv2d(padded, kernel, groups=channels)


def reconstruction_loss(
    reconstruction: torch.Tensor, pixels: torch.Tensor, loss: Loss = "mse", edge_weight: float = 1.0
) -> torch.Tensor:
    """``mse``: what the shipped decoder was trained with. ``edge``: L1 on pixels plus
    ``edge_weight`` times L1 on the Sobel gradients, which charges blurred corners and edges."""
    if loss == "mse":
        return nn.functional.mse_loss(reconstruction, pixels)
    if loss == "edge":
        pixel_term = nn.functional.l1_loss(reconstruction, pixels)
        edge_term = nn.functional.l1_loss(sobel(reconstruction), sobel(pixels))
        return pixel_term + edge_weight * edge_term
    raise ValueError(f"unknown loss {loss!r}; one of {LOSSES}")


def decoder_step(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    max_grad_norm: float = 1.0,
    loss_kind: Loss = "mse",
    edge_weight: float = 1.0,
) -> float:
    """One step: reconstruct ``pixels`` from a posterior sample of the frozen encoder."""
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator)
    reconstruction = vae.decode(latents).sample
    loss = reconstruction_loss(reconstruction, pixels, loss_kind, edge_weight)
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
    parser.add_argument("--loss", choices=LOSSES, default="mse")
    parser.add_argument("--edge-weight", type=float, default=1.0, help="for --loss edge")
    parser.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also write <out>/checkpoints/step-N/vae every N steps (0: never)",
    )
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
    if args.save_every:  # a previous run's checkpoints would be mixed with this run's
        shutil.rmtree(args.out / "checkpoints", ignore_errors=True)
    started = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup)
        pixels = batches(args.batch_size)[0].to(device)
        loss = decoder_step(vae, pixels, optimizer, generator, loss_kind=args.loss,
                            edge_weight=args.edge_weight)  # fmt: skip
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            vae.save_pretrained(args.out / "checkpoints" / f"step-{step + 1}" / "vae")
        if step % args.log_every == 0 or step == args.steps - 1:
            per_step = (time.perf_counter() - started) / (step + 1)
            print(f"decoder {step:6d}  loss {loss:.5f}  {per_step:.3f} s/step", flush=True)
    minutes = (time.perf_counter() - started) / 60

    checkpoints = args.out / "checkpoints"
    kept = args.out.parent / f".{args.out.name}-checkpoints"
    if checkpoints.exists():
        shutil.move(checkpoints, kept)
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.model, args.out)
    if kept.exists():
        shutil.move(kept, checkpoints)
    shutil.rmtree(args.out / "vae")
    vae.eval().to("cpu").save_pretrained(args.out / "vae")
    summary_path = args.out / "training_summary.json"
    summary = json.loads(summary_path.read_text())
    command = "python -m nodes.demo.train_decoder " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    run = {"minutes": minutes, "loss": loss, "command": command}
    earlier = summary.get("decoder", [])  # one record per fine-tune, oldest first
    summary["decoder"] = [*([earlier] if isinstance(earlier, dict) else earlier), run]
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    card = args.out / "README.md"
    text = card.read_text(encoding="utf-8")
    note = (f"The VAE decoder was then fine-tuned for {args.steps} steps (encoder frozen, "
            f"{minutes:.1f} minutes, final {args.loss} loss {loss:.4f})")  # fmt: skip
    if "\n```\n\nLicense:" in text:  # the first fine-tune: its command joins the code block
        text = text.replace("\n```\n\nLicense:", f"\n{command}\n```\n\n{note}.\n\nLicense:")
    else:  # a later one goes after the earlier notes, command and all
        text = text.replace("\n\nLicense:", f"\n\n{note}: `{command}`.\n\nLicense:", 1)
    card.write_text(text, encoding="utf-8")
    print(json.dumps(run), flush=True)
    return run


if __name__ == "__main__":
    main()
