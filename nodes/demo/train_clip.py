"""Train ``demo-clip``: a small contrastive image-text model of the demo scenes, in the real CLIP
architecture (transformers ``CLIPModel``) with the real CLIP tokenizer.

Run from the repository root (not run by CI; see ``nodes/demo/TRAINING.md``)::

    python -m nodes.demo.train_clip --out build/demo-clip --threads 1

Why it exists: CLIP guidance, text diffs and the image-variation path need image and text
embeddings that share one space and mean something in the demo world; a random encoder gives
neither. CLIP's recipe, scaled down: a ViT image tower (64x64 pictures, 8x8 patches) and a causal
text transformer, each with a linear projection into a shared 64-wide space, trained with the
symmetric InfoNCE loss (cross-entropy over cosine similarities times a learned temperature, image
to text and text to image). Two things are added for this world: each picture also brings one
*hard negative* caption, its scene with one attribute changed (``nodes.demo.variants``), into the
image-to-text softmax (as NegCLIP does), so the model must read every word, not just the
commonest one; and identical captions in a batch are all positives (soft targets), so duplicate
captions are never pushed apart.

Everything is seeded (weights from ``--seed``, data from ``--seed + 1``): the same arguments and
thread count give the same weights. A run saves its whole state (weights, AdamW moments, step,
data stream position) to ``<out>/state/`` every ``--save-every`` steps, in safetensors and JSON
(no pickle), and ``--resume`` continues it bit for bit. The result is a transformers folder:
``config.json`` + ``model.safetensors`` (fp16), the CLIP tokenizer and image processor files, a
model card and ``training_summary.json`` with the held-out retrieval per attribute.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from nodes.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    clip_tokenizer,
    clip_vocab,
    write_clip_tokenizer,
)
from nodes.demo.dataset import IMAGE_SIZE, Scene, caption, render, sample_scene
from nodes.demo.run_state import (
    module_tensors,
    optimizer_state_tensors,
    python_rng_state,
    restore_module,
    restore_optimizer_state,
    restore_python_rng,
)
from nodes.demo.variants import random_variant, variants

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Batches",
    "ClipSizes",
    "build_clip",
    "contrastive_loss",
    "pixel_values",
    "save_clip_folder",
    "train_step",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation, kept so the folder's image processor is an ordinary CLIP one."""
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP's temperature: starts at 1/0.07 and is clipped at 100."""


@dataclass(frozen=True)
class ClipSizes:
    """The architecture; the defaults are ``demo-clip``'s, ``micro`` is for tests."""

    width: int = 64
    text_layers: int = 3
    vision_layers: int = 4
    heads: int = 2
    mlp: int = 256
    patch: int = 8
    projection: int = 64

    @classmethod
    def micro(cls) -> ClipSizes:
        return cls(
            width=16, text_layers=1, vision_layers=1, heads=2, mlp=32, patch=16, projection=8
        )


def clip_config(sizes: ClipSizes) -> CLIPConfig:
    vocab = clip_vocab()
    text = {
        "vocab_size": len(vocab),
        "hidden_size": sizes.width,
        "intermediate_size": sizes.mlp,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.heads,
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "hidden_act": "quick_gelu",
        "projection_dim": sizes.projection,
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[EOS_TOKEN],
    }
    vision = {
        "hidden_size": sizes.width,
        "intermediate_size": sizes.mlp,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.heads,
        "image_size": IMAGE_SIZE,
        "patch_size": sizes.patch,
        "hidden_act": "quick_gelu",
        "projection_dim": sizes.projection,
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=sizes.projection,
        logit_scale_init_value=INITIAL_LOGIT_SCALE,
    )


def build_clip(sizes: ClipSizes, seed: int) -> CLIPModel:
    """A freshly initialised ``CLIPModel`` (transformers' own initialisation, seeded)."""
    torch.manual_seed(seed)
    return CLIPModel(clip_config(sizes)).train()


def image_processor() -> CLIPImageProcessor:
    """CLIP's preprocessing at the demo's size: resize the short side to 64 (bicubic), center
    crop 64, scale to 0..1, normalise with CLIP's mean and std. On a 64x64 picture the resize and
    crop change nothing, so ``pixel_values`` below computes the same thing directly."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        resample=3,
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def pixel_values(pictures: Sequence[Any]) -> torch.Tensor:
    """64x64 RGB pictures -> the normalised [B,3,64,64] tensor the image processor makes."""
    array = np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) for p in pictures]) / 255
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy((array - mean) / std).permute(0, 3, 1, 2).contiguous()


class Batches:
    """Seeded batches of held-in scenes: pictures, their captions and one hard negative each.

    Token ids are cached per caption (a few thousand distinct ones). ``rng`` is the whole data
    stream's state, so saving ``rng.getstate()`` and restoring it resumes the stream exactly.
    """

    def __init__(self, seed: int, position_negatives: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.position_negatives = position_negatives
        """The share of pictures with a named position whose hard negative is a position
        variant (otherwise any attribute, uniformly: position then comes up rarely)."""
        self._ids: dict[str, list[int]] = {}

    def tokens(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids padded with ``<|endoftext|>`` to the batch's longest caption, not to 77:
        the text tower is causal and pools at the first end token, so the padding after it
        changes nothing but the cost (tested against the 77-token padding)."""
        tokenizer: Any = clip_tokenizer()
        missing = [text for text in dict.fromkeys(captions) if text not in self._ids]
        if missing:
            encoded = tokenizer(missing, max_length=MODEL_MAX_LENGTH, truncation=True).input_ids
            self._ids.update(zip(missing, encoded, strict=True))
        rows = [self._ids[text] for text in captions]
        longest = max(len(row) for row in rows)
        pad = clip_vocab()[EOS_TOKEN]
        return torch.tensor([row + [pad] * (longest - len(row)) for row in rows])

    def __call__(self, size: int) -> tuple[torch.Tensor, list[str], list[str]]:
        """``(pixel values [B,3,64,64], captions, hard-negative captions)``."""
        pictures, captions, negatives = [], [], []
        for _ in range(size):
            scene = sample_scene(self.rng, split="train")
            pictures.append(render(scene))
            captions.append(caption(scene))
            negatives.append(caption(self._negative(scene)))
        return pixel_values(pictures), captions, negatives

    def _negative(self, scene: Scene) -> Scene:
        # No draw at all when the share is 0, so runs without it keep their data stream.
        if (
            self.position_negatives > 0
            and scene.position is not None
            and self.rng.random() < self.position_negatives
        ):
            return self.rng.choice(variants(scene, "position"))
        return random_variant(scene, self.rng)


def _soft_targets(rows: Sequence[str], columns: Sequence[str]) -> torch.Tensor:
    """Row i spreads probability 1 evenly over the columns whose caption equals row i's."""
    same = torch.tensor([[r == c for c in columns] for r in rows], dtype=torch.float32)
    return same / same.sum(dim=1, keepdim=True)


def contrastive_loss(
    model: CLIPModel,
    pixels: torch.Tensor,
    captions: Sequence[str],
    negatives: Sequence[str],
    batches: Batches,
) -> torch.Tensor:
    """Symmetric InfoNCE: image -> text over the batch's captions and hard negatives, text ->
    image over the batch's pictures, each a cross-entropy on scaled cosine similarities."""
    texts = [*captions, *negatives]
    ids = batches.tokens(texts).to(pixels.device)
    image = model.get_image_features(pixel_values=pixels).pooler_output
    text = model.get_text_features(input_ids=ids).pooler_output
    image = torch.nn.functional.normalize(image, dim=-1)
    text = torch.nn.functional.normalize(text, dim=-1)
    scale = model.logit_scale.exp()
    logits = scale * image @ text.T  # [B, 2B]
    image_to_text = torch.nn.functional.cross_entropy(
        logits, _soft_targets(captions, texts).to(logits.device)
    )
    text_to_image = torch.nn.functional.cross_entropy(
        logits[:, : len(captions)].T, _soft_targets(captions, captions).to(logits.device)
    )
    return (image_to_text + text_to_image) / 2


def train_step(
    model: CLIPModel,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    batch_size: int,
    device: torch.device,
    max_grad_norm: float = 1.0,
) -> float:
    """One optimiser step on a fresh batch; returns the loss. The temperature is clipped after
    the step, as CLIP clips it."""
    pixels, captions, negatives = batches(batch_size)
    loss = contrastive_loss(model, pixels.to(device), captions, negatives, batches)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return float(loss.detach())


def make_optimizer(model: CLIPModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on gains, biases, embeddings' positions and the temperature (CLIP's
    choice), decay on matrices."""
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        matrix = parameter.ndim >= 2 and "position_embedding" not in name
        (decay if matrix else plain).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


# -- resumable state: safetensors for tensors, JSON for the rest (no pickle) ----------------------


def save_state(
    folder: Path,
    model: CLIPModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    batches: Batches,
    extra: dict[str, Any],
) -> None:
    """Write the run's whole state atomically enough for a crash: tensors, then the JSON that
    names the step (read last, so a half-written state is never resumed)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {**module_tensors("model", model), **optimizer_state_tensors(optimizer)}
    optimizer_state = optimizer.state_dict()
    save_file(tensors, folder / "state.tmp.safetensors")
    (folder / "state.tmp.safetensors").replace(folder / "state.safetensors")
    groups = [{k: v for k, v in group.items()} for group in optimizer_state["param_groups"]]
    meta = {
        "step": step,
        "param_groups": groups,
        "rng": python_rng_state(batches.rng),
        **extra,
    }
    (folder / "state.tmp.json").write_text(json.dumps(meta))
    (folder / "state.tmp.json").replace(folder / "state.json")


def load_state(
    folder: Path, model: CLIPModel, optimizer: torch.optim.Optimizer, batches: Batches
) -> dict[str, Any]:
    """Restore what ``save_state`` wrote into fresh objects of the same shapes; returns its JSON."""
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(folder / "state.safetensors")
    restore_module("model", model, tensors)
    restore_optimizer_state(optimizer, tensors, param_groups=meta["param_groups"])
    restore_python_rng(batches.rng, meta["rng"])
    return meta


# -- the shipped folder ---------------------------------------------------------------------------


def save_clip_folder(model: CLIPModel, out: Path, *, half: bool = True) -> int:
    """Write a transformers ``CLIPModel`` folder that ``CLIPModel``, ``CLIPProcessor``,
    ``CLIPVisionModelWithProjection`` and ``CLIPTextModelWithProjection`` all load offline.
    Returns the weights file's size in bytes."""
    out.mkdir(parents=True, exist_ok=True)
    shipped = CLIPModel(model.config)
    shipped.load_state_dict(model.state_dict())
    if half:
        shipped = shipped.half()
    shipped.save_pretrained(out)
    write_clip_tokenizer(out)
    image_processor().save_pretrained(out)
    return (out / "model.safetensors").stat().st_size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-scenes", type=int, default=200)
    parser.add_argument("--resume", action="store_true", help="continue <out>/state/ if there")
    parser.add_argument("--micro", action="store_true", help="the tiny test architecture")
    parser.add_argument(
        "--init", type=Path, help="start from this run's final weights (its state/), not random"
    )
    parser.add_argument(
        "--position-negatives",
        type=float,
        default=0.0,
        help="share of positioned pictures whose hard negative is a position variant",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = ClipSizes.micro() if args.micro else ClipSizes()
    model = build_clip(sizes, args.seed).to(device)
    if args.init is not None:  # fp32 weights from the other run's state, not its fp16 folder
        weights = load_file(args.init / "state" / "state.safetensors")
        model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    batches = Batches(args.seed + 1, args.position_negatives)
    state_folder = args.out / "state"
    start, elapsed, losses = 0, 0.0, []
    if args.resume and (state_folder / "state.json").is_file():
        meta = load_state(state_folder, model, optimizer, batches)
        start, elapsed, losses = meta["step"], meta["seconds"], meta["losses"]
        print(f"resumed at step {start}", flush=True)
    started = time.perf_counter() - elapsed
    for step in range(start, args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup)
        loss = train_step(model, optimizer, batches, args.batch_size, device)
        if step % args.log_every == 0 or step == args.steps - 1:
            seconds = time.perf_counter() - started
            losses.append([step, round(loss, 5)])
            print(
                f"clip {step:6d}  loss {loss:.4f}  scale {model.logit_scale.exp():.1f}  "
                f"{seconds / (step + 1):.3f} s/step",
                flush=True,
            )
        if (step + 1) % args.save_every == 0 or step == args.steps - 1:
            extra = {
                "seconds": time.perf_counter() - started,
                "losses": losses,
                "args": {k: str(v) for k, v in vars(args).items()},
            }
            save_state(state_folder, model, optimizer, step + 1, batches, extra)
    minutes = (time.perf_counter() - started) / 60
    size = save_clip_folder(model.cpu(), args.out)
    from nodes.demo.clip_card import write_card
    from nodes.demo.retrieval import load_demo_clip, retrieval

    shipped = load_demo_clip(args.out)
    scores = retrieval(shipped, scenes=args.eval_scenes, seed=12345)
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": asdict(sizes),
        "steps": args.steps,
        "minutes": round(minutes, 2),
        "losses": losses,
        "weights_bytes": size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "retrieval": scores,
    }
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_card(args.out, summary)
    print(json.dumps({k: summary[k] for k in ("minutes", "retrieval")}, indent=2), flush=True)
    return summary


if __name__ == "__main__":
    main()
