"""DreamBooth on the demo world: a rare token learns the outlined style, with and without prior
preservation, and what each costs the prompts without the token.

Run from the repository root (on demand, not in CI; about half an hour on the 2-core machine)::

    python tests/benchmarks/bench_dreambooth.py [--steps 600] [--batch-size 4] [--lr 3e-4]
        [--scenes 200] [--class-prompts 50] [--class-images 100] [--n 50] [--threads 1]
        [--no-write]

Two full fine-tunes of the built-in demo model's U-Net through the nodes a user runs
(LoadCheckpoint ``demo`` -> DemoSceneDataset outlined -> CaptionTemplate ``sks style,
{caption}`` -> TrainUNet), the same settings and seed, one without and one with prior
preservation (Ruiz et al. 2022): ``--class-images`` pictures the base model draws for
``--class-prompts`` plain training captions (no token), trained on beside the instances with
weight 1. Then the base model and both fine-tunes render ``--n`` held-out captions twice, with
the token (``sks style, <caption>``) and without it (the plain caption), CFG 7.5, euler 20
steps, Denoise seed = caption index (paired: the same noise for every model and prompt), each
picture scored by ``nodes.demo.evaluate``:

* with the token: the mean outline score and the share read as outlined (did the token learn
  the style?);
* without the token: whole-caption adherence and shape color (did the model keep following
  prompts?), and the outline score (does the style leak into prompts without the token, the
  "language drift" prior preservation is meant to prevent?).

The renders use the trained U-Net straight from TrainUNet's output in the same workflow (the
training node is a cache hit after its run). Everything is resumable: training states live under
``build/bench_dreambooth/models/unet/``, scores in ``build/bench_dreambooth/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## DreamBooth with and without prior preservation (tests/benchmarks/bench_dreambooth.py)"
WORK = REPO / "build" / "bench_dreambooth"
TOKEN_TEMPLATE = "sks style, {caption}"
VARIANTS = ("base", "without prior", "with prior")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--scenes", type=int, default=200, help="outlined instance scenes")
    parser.add_argument("--class-prompts", type=int, default=50)
    parser.add_argument("--class-images", type=int, default=100)
    parser.add_argument("--prior-weight", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=50, help="held-out captions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def class_prompts(count: int, seed: int) -> str:
    """``count`` distinct plain captions of the training split (the class: demo pictures)."""
    from nodes.demo.dataset import caption, sample_scene

    rng = random.Random(seed + 1)
    found: dict[str, None] = {}
    while len(found) < count:
        found[caption(sample_scene(rng, split="train", style="plain"))] = None
    return "\n".join(found)


def add_training(b: Any, args: argparse.Namespace, variant: str) -> Any:
    """LoadCheckpoint demo -> DemoSceneDataset outlined -> CaptionTemplate -> TrainUNet."""
    model = b.add("LoadCheckpoint", id="model", path="demo")
    if variant == "base":
        return model, model.unet
    data = b.add("DemoSceneDataset", id="data", style="outlined", size=args.scenes,
                 seed=args.seed)  # fmt: skip
    tokens = b.add("CaptionTemplate", id="captions", dataset=data.dataset,
                   template=TOKEN_TEMPLATE)  # fmt: skip
    prior = {"class_prompts": class_prompts(args.class_prompts, args.seed),
             "class_images": args.class_images, "prior_loss_weight": args.prior_weight} \
        if variant == "with prior" else {}  # fmt: skip
    name = "dreambooth-" + variant.replace(" ", "-")
    train = b.add("TrainUNet", id="train", unet=model.unet, text_encoder=model.text_encoder,
                  vae=model.vae, dataset=tokens.dataset, name=name, steps=args.steps,
                  batch_size=args.batch_size, learning_rate=args.lr, schedule="constant",
                  seed=args.seed, save_every=50, preview_every=0, preview_steps=20,
                  resume=True, **prior)  # fmt: skip
    return model, train.unet


def render_workflow(args: argparse.Namespace, variant: str, prompt: str, seed: int) -> Any:
    """The training graph (or the base model) and the demo's standard sampling tail."""
    from nodeflow.builder import WorkflowBuilder
    from nodes.demo.adherence import DEFAULT_CFG, DEFAULT_STEPS, add_sampling

    b = WorkflowBuilder()
    model, unet = add_training(b, args, variant)
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text="")
    add_sampling(b, unet, model.vae, pos.conditioning, neg.conditioning, cfg=DEFAULT_CFG,
                 steps=DEFAULT_STEPS, seed=seed)  # fmt: skip
    return b.build()


def make_executor() -> Any:
    from nodeflow.context import Environment
    from nodeflow.executor import Executor
    from nodeflow.plugins import load_catalog
    from nodeflow.runtime import Runtime

    env = Environment.from_dirs(WORK / "models", WORK / "output", WORK / "input")
    return Executor(load_catalog(), env=env, runtime=Runtime("cpu"), previews=False)


def train(executor: Any, args: argparse.Namespace, variant: str, timings: dict) -> None:
    """Run the variant's training (resuming its state), timing it the first time."""
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    add_training(b, args, variant)
    started = time.perf_counter()
    result = executor.run(b.build(), targets=["train"])
    if not result.ok:
        raise RuntimeError(result.error.traceback if result.error else result.status)
    timings.setdefault(variant, time.perf_counter() - started)
    (WORK / "timings.json").write_text(json.dumps(timings))
    print(f"{variant}: trained ({timings[variant]:.0f} s)", flush=True)


def evaluate(executor: Any, args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Scores with and without the token on the held-out captions."""
    from nodes.demo.adherence import held_out_scenes
    from nodes.demo.dataset import caption
    from nodes.demo.evaluate import score

    rows: dict[str, list[dict[str, Any]]] = {"token": [], "plain": []}
    for index, scene in enumerate(held_out_scenes(args.n, seed=args.seed)):
        text = caption(scene)
        for kind, prompt in (("token", TOKEN_TEMPLATE.replace("{caption}", text)),
                             ("plain", text)):  # fmt: skip
            result = executor.run(render_workflow(args, variant, prompt, index),
                                  targets=["decode"])  # fmt: skip
            if not result.ok:
                raise RuntimeError(result.error.traceback if result.error else result.status)
            picture = result.values["decode"]["image"].pixels[0].float().numpy()
            rows[kind].append(score(picture, scene))
    return {kind: summary(found) for kind, found in rows.items()}


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    def share(key: str) -> float:
        values = [bool(r[key]) for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else float("nan")

    return {
        "pictures": len(rows),
        "outline_score": sum(r["outline_score"] for r in rows) / len(rows),
        "outlined": sum(r["style"] == "outlined" for r in rows) / len(rows),
        "caption_ok": share("caption_ok"),
        "color_ok": share("color_ok"),
        "shape_ok": share("shape_ok"),
    }


def table(results: dict[str, Any], n: int) -> str:
    lines = [
        "| model | **outline score, token** | read as outlined, token "
        "| **whole caption, no token** | shape color, no token "
        "| outline score, no token (leak) | ± 1 SE (whole caption) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        if variant not in results:
            continue
        token, plain = results[variant]["token"], results[variant]["plain"]
        p = plain["caption_ok"]
        lines.append(
            f"| {variant} | **{token['outline_score']:.3f}** | {100 * token['outlined']:.1f}% "
            f"| **{100 * p:.1f}%** | {100 * plain['color_ok']:.1f}% "
            f"| {plain['outline_score']:.3f} | {100 * math.sqrt(p * (1 - p) / n):.1f} pt |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from nodes.loaders import quiet_hub_libraries

    quiet_hub_libraries()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = WORK / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    timings = json.loads((WORK / "timings.json").read_text()) if (
        WORK / "timings.json").is_file() else {}  # fmt: skip
    for variant in VARIANTS:
        if variant in results and results[variant]["token"]["pictures"] == args.n:
            continue
        executor = make_executor()
        if variant != "base":
            train(executor, args, variant, timings)
        results[variant] = evaluate(executor, args, variant)
        path.write_text(json.dumps(results, indent=1))
        print(f"{variant}: {json.dumps(results[variant])}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    per_step = {v: timings[v] / args.steps for v in timings}
    text = "\n".join([
        SECTION, "",
        f"- Date: {utc_date()}",
        f"- Machine: {machine_summary()}",
        "- Command: `python tests/benchmarks/bench_dreambooth.py " + " ".join(sys.argv[1:]) + "`",
        f"- Training: the built-in demo model's U-Net, fully fine-tuned (TrainUNet, AdamW lr "
        f"{args.lr} constant, {args.steps} steps of batch {args.batch_size}, seed {args.seed}) on "
        f"{args.scenes} outlined demo scenes captioned `{TOKEN_TEMPLATE}`; with prior: "
        f"{args.class_images} class pictures drawn by the base model for {args.class_prompts} "
        f"plain training captions, prior loss weight {args.prior_weight}, {args.batch_size} "
        "class pictures per step beside the instances. Seconds per step at "
        f"{args.threads} thread(s): "
        + ", ".join(f"{v} {s:.2f}" for v, s in per_step.items())
        + " (the first run of each; the prior's includes drawing the class pictures).",
        f"- Evaluation: {args.n} held-out captions (`held_out_scenes({args.n})`), each with the "
        "token and without it, CFG 7.5, euler 20 steps, Denoise seed = caption index, scored by "
        "`nodes.demo.evaluate.score`.",
        f"- Wall time in all (this invocation): {minutes:.1f} minutes.", "",
        table(results, args.n),
    ])  # fmt: skip
    print(text, flush=True)
    if not args.no_write:
        write_section(REPO / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
