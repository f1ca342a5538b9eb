"""Classifier guidance and CLIP guidance on the demo model: the evaluator's score of the target
attribute per guidance scale, against the same seeds without guidance.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/bench_guidance.py [--n 100] [--batch 25] [--steps 20]
        [--classifier demo-classifier] [--clip demo-clip] [--scales 0 10 30 100]
        [--clip-scales 0 10 30 100] [--noised-clip demo-clip-noised]
        [--noised-clip-scales 0 30 100 300]
        [--modes classifier-cfg classifier-uncond clip-cfg clip-uncond noised-clip-cfg
                 noised-clip-uncond]
        [--threads 1] [--no-write] [--table-only]

``--n`` held-out captions (``nodes.demo.adherence.held_out_scenes``, seed ``--seed``) are
sampled in batches of ``--batch``; batch ``k`` draws its noise from Denoise's generator seeded
``--seed + k``, so every mode and scale starts each caption from the same noise, and scale 0 is
the same picture as sampling without the term (tested bit for bit). Modes:

* ``classifier-cfg``: the caption at CFG ``--cfg``, guided toward the caption's color by the
  noise-aware classifier (``demo-classifier`` reads the shapes' color);
* ``classifier-uncond``: the empty prompt at CFG 1 (unconditional), guided toward the color of
  the caption it stands for: the color is then the classifier's doing alone;
* ``clip-cfg``: the caption at CFG ``--cfg``, with CLIP guidance toward the caption
  (``--clip``: a whole-CLIP folder such as ``demo-clip``);
* ``clip-uncond``: the empty prompt at CFG 1, CLIP-guided toward the caption alone;
* ``noised-clip-cfg`` / ``noised-clip-uncond``: the same two with a noise-aware CLIP
  (``--noised-clip``, GLIDE's noised CLIP: ``demo-clip-noised`` reads the noisy latents).

Each picture is scored by ``nodes.demo.evaluate.score``; the target attribute is the shapes'
color (``color_ok``) for classifier guidance and the whole caption for CLIP guidance (its
per-attribute readings are printed beside it). Results are kept per batch in ``--state`` so an
interrupted run continues; it prints a markdown section and writes it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
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

SECTION = "## Classifier and CLIP guidance on the demo model (tests/benchmarks/bench_guidance.py)"
NOISED_SECTION = (
    "## Noise-aware CLIP guidance (GLIDE's noised CLIP) on the demo model "
    "(tests/benchmarks/bench_guidance.py)"
)
"""A run of the noised-CLIP modes alone writes its own section, leaving the other one's."""
ATTRIBUTES = ("color_ok", "shape_ok", "background_ok", "count_ok", "caption_ok")
TARGET = {
    "classifier-cfg": "color_ok",
    "classifier-uncond": "color_ok",
    "clip-cfg": "caption_ok",
    "clip-uncond": "caption_ok",
    "noised-clip-cfg": "caption_ok",
    "noised-clip-uncond": "caption_ok",
}
UNCONDITIONAL = ("classifier-uncond", "clip-uncond", "noised-clip-uncond")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", default="demo-classifier")
    parser.add_argument("--clip", default="demo-clip")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 10, 30, 100])
    parser.add_argument("--clip-scales", type=float, nargs="+", default=[0, 10, 30, 100])
    parser.add_argument("--noised-clip", default="demo-clip-noised")
    parser.add_argument("--noised-clip-scales", type=float, nargs="+", default=[0, 30, 100, 300])
    parser.add_argument("--modes", nargs="+", default=list(TARGET), choices=list(TARGET))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--state", type=Path, default=REPO / "build" / "bench_guidance.json")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="sample nothing: make the section from the batches --state already holds",
    )
    return parser.parse_args(argv)


class Bench:
    """The demo model's parts, loaded once, and one batch of guided pictures at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from nodeflow import Environment
        from nodes.classifier_guidance import resolve_classifier
        from nodes.latent_classifier import load_classifier
        from nodes.loaders import _load_diffusers_folder, demo_model
        from nodes.schedulers import make_scheduler

        self.args = args
        self.parts = _load_diffusers_folder(demo_model(), torch.float32, "auto")
        self.recipe = make_scheduler(
            args.scheduler, self.parts.unet.scheduler_config, args.steps, "default", False
        )
        self.classifier = None
        if any(mode.startswith("classifier") for mode in args.modes):
            path = resolve_classifier(args.classifier, Environment.from_dirs())
            self.classifier = load_classifier(path)
        self.clip = None
        if any(mode.startswith("clip") for mode in args.modes):
            from nodes.clip_model import load_clip_folder
            from nodes.loaders import resolve_checkpoint

            self.clip = load_clip_folder(resolve_checkpoint(args.clip, Environment.from_dirs()))
        self.noised_clip = None
        if any(mode.startswith("noised-clip") for mode in args.modes):
            from nodes.clip_model import load_clip_folder
            from nodes.loaders import resolve_checkpoint

            location = resolve_checkpoint(args.noised_clip, Environment.from_dirs())
            self.noised_clip = load_clip_folder(location)

    def encode(self, texts: list[str]) -> Any:
        import torch

        from nodes.text import encode_text
        from nodes.types import Conditioning

        embeds = [encode_text(self.parts.text_encoder, text, None).embeds for text in texts]
        return Conditioning(embeds=torch.cat(embeds))

    def pictures(self, mode: str, scale: float, scenes: list[Any], batch: int) -> Any:

        from nodes.classifier_guidance import ClassifierTerm
        from nodes.clip_guidance import CLIPTerm, NoisedCLIPTerm
        from nodes.clip_model import text_features
        from nodes.demo.dataset import COLORS, caption
        from nodes.denoise import sample
        from nodes.types import Guider, Latent
        from nodes.vae import decode

        captions = [caption(scene) for scene in scenes]
        unconditional = mode in UNCONDITIONAL
        positive = self.encode([""] * len(scenes) if unconditional else captions)
        negative = self.encode([""] * len(scenes))
        terms: tuple[Any, ...] = ()
        if mode.startswith("classifier"):
            labels = tuple(COLORS.index(scene.color) for scene in scenes)
            terms = (ClassifierTerm(self.classifier, labels, scale),)
        elif mode.startswith("noised-clip"):  # reads the noisy latents: no decode
            text = text_features(self.noised_clip, captions)
            terms = (NoisedCLIPTerm(self.noised_clip, text, scale),)
        else:  # CLIP guidance toward the caption, with or without it as the prompt
            text = text_features(self.clip, captions)
            terms = (CLIPTerm(self.clip, self.parts.vae.model, text, scale),)
        guider = Guider(
            unet=self.parts.unet,
            positive=positive,
            negative=negative,
            scale=1.0 if unconditional else self.args.cfg,
            terms=terms,
        )
        latent = Latent(samples=None, width=64, height=64, batch_size=len(scenes))
        latents = sample(guider, self.recipe, latent, self.args.seed + batch)
        return decode(self.parts.vae, Latent(latents, 64, 64, len(scenes))).pixels


def models_fingerprint(args: argparse.Namespace) -> str:
    """A digest of the files of every model the chosen modes sample with.

    A batch in ``--state`` is only valid for the weights that drew it: the demo model's decoder
    was replaced once, and the old state file would have been reused silently under the same
    names. Hashing the files (tens of MB) takes well under a second.
    """
    import hashlib

    from nodeflow import Environment
    from nodes.classifier_guidance import resolve_classifier
    from nodes.loaders import demo_model, resolve_checkpoint

    env = Environment.from_dirs()
    locations = [demo_model()]
    if any(mode.startswith("classifier") for mode in args.modes):
        locations.append(resolve_classifier(args.classifier, env))
    if any(mode.startswith("clip") for mode in args.modes):
        locations.append(resolve_checkpoint(args.clip, env))
    if any(mode.startswith("noised-clip") for mode in args.modes):
        locations.append(resolve_checkpoint(args.noised_clip, env))
    digest = hashlib.sha256()
    for location in map(Path, locations):
        files = sorted(location.rglob("*")) if location.is_dir() else [location]
        for file in (f for f in files if f.is_file() and f.suffix == ".safetensors"):
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def batch_key(
    args: argparse.Namespace, models: str, mode: str, scale: float, start: int
) -> str:
    """Where one batch's scores live in ``--state``: everything that decides its pictures."""
    return f"{mode}|{scale:g}|{start}|{args.batch}|{args.steps}|{args.scheduler}|{models}"


def scales_of(args: argparse.Namespace, mode: str) -> list[float]:
    if mode.startswith("noised-clip"):
        return args.noised_clip_scales
    return args.clip_scales if mode.startswith("clip") else args.scales


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from nodes.demo.adherence import held_out_scenes
    from nodes.demo.evaluate import score

    torch.set_num_threads(args.threads)
    scenes = held_out_scenes(args.n, args.seed)
    state: dict[str, Any] = json.loads(args.state.read_text()) if args.state.is_file() else {}
    models = models_fingerprint(args)
    bench = Bench(args)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    for mode in args.modes:
        for scale in scales_of(args, mode):
            for batch, start in enumerate(range(0, args.n, args.batch)):
                key = batch_key(args, models, mode, scale, start)
                if key in state:
                    continue
                chunk = scenes[start : start + args.batch]
                started = time.perf_counter()
                pixels = bench.pictures(mode, scale, chunk, batch)
                scores = [
                    {k: bool(v) for k, v in score(p.numpy(), s).items() if k in ATTRIBUTES}
                    for p, s in zip(pixels, chunk, strict=True)
                ]
                state[key] = {"scores": scores, "seconds": time.perf_counter() - started}
                args.state.write_text(json.dumps(state))
                hits = sum(s[TARGET[mode]] for s in scores)
                print(f"{mode} scale {scale:g} batch {batch}: {hits}/{len(scores)} "
                      f"{TARGET[mode]} ({state[key]['seconds']:.1f} s)", flush=True)  # fmt: skip
    return state


def table(args: argparse.Namespace, state: dict[str, Any]) -> str:
    models = models_fingerprint(args)
    rows = [
        "| mode | guidance scale | pictures | **target** | vs scale 0 (same seeds) | "
        "shape color | shape | background | count | whole caption | s/picture |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in args.modes:
        scales = scales_of(args, mode)
        baseline: list[dict[str, bool]] | None = None
        for scale in scales:
            scores: list[dict[str, bool]] = []
            seconds = 0.0
            for start in range(0, args.n, args.batch):
                key = batch_key(args, models, mode, scale, start)
                if key in state:
                    scores += state[key]["scores"]
                    seconds += state[key]["seconds"]
            if not scores:
                continue
            if baseline is None:
                baseline = scores
            target = TARGET[mode]

            def share(name: str, found: list[dict[str, bool]] = scores) -> float:
                return sum(s[name] for s in found) / len(found)

            paired = list(zip(baseline, scores, strict=False))
            gained = sum(not b[target] and s[target] for b, s in paired)
            lost = sum(b[target] and not s[target] for b, s in paired)
            rows.append(
                f"| {mode} | {scale:g} | {len(scores)} | **{100 * share(target):.1f}%** "
                f"({target}) | +{gained} / -{lost} pictures | "
                + " | ".join(f"{100 * share(a):.1f}%" for a in ATTRIBUTES[:4])
                + f" | {100 * share('caption_ok'):.1f}% | {seconds / len(scores):.2f} |"
            )
    return "\n".join(rows)


def sampled(args: argparse.Namespace, state: dict[str, Any]) -> float:
    """Seconds spent on the batches this table shows."""
    models = models_fingerprint(args)
    total = 0.0
    for mode in args.modes:
        for scale in scales_of(args, mode):
            for start in range(0, args.n, args.batch):
                key = batch_key(args, models, mode, scale, start)
                total += state.get(key, {}).get("seconds", 0.0)
    return total


def section(args: argparse.Namespace, state: dict[str, Any], minutes: float, argv: list) -> str:
    import diffusers
    import torch

    machine = machine_summary(
        f"torch threads {args.threads}", f"torch {torch.__version__}",
        f"diffusers {diffusers.__version__}",
    )  # fmt: skip
    return "\n".join([
        section_title(args), "",
        f"- Date: {utc_date()}",
        f"- Machine: {machine}",
        f"- Command: `python tests/benchmarks/bench_guidance.py {' '.join(argv)}`"
        + (" (the batches were sampled by earlier runs of the same script into `--state`; "
           "without `--table-only` it samples whichever are missing)" if args.table_only else ""),
        f"- Settings: {args.n} held-out captions (`held_out_scenes({args.n}, {args.seed})`), "
        f"batches of {args.batch} (Denoise seed {args.seed} + batch index, the same for every "
        f"mode and scale), {args.scheduler} {args.steps} steps, CFG {args.cfg:g} with negative "
        f"prompt \"\" (the -uncond modes: the empty prompt at CFG 1), 64x64, demo model; "
        f"classifier `{args.classifier}`; CLIP `{args.clip or '-'}`; noise-aware CLIP "
        f"`{args.noised_clip}`; scored by "
        f"`nodes.demo.evaluate.score`. {sampled(args, state) / 60:.1f} minutes of sampling "
        f"and scoring in all (summed over batches, which may come from resumed runs; "
        f"{minutes:.1f} in this one).",
        "- Target: the shapes' color (`color_ok`, the class the classifier is guided toward: the "
        "caption's color) for classifier guidance; the whole caption for CLIP guidance. "
        "\"vs scale 0\": pictures whose target reading was gained / lost against the same seeds "
        "without guidance (scale 0 is bit-identical to no term). In the -uncond modes the prompt "
        "is empty, so its other columns compare pictures with a caption the model was not given.",
        "",
        table(args, state),
    ])  # fmt: skip


def section_title(args: argparse.Namespace) -> str:
    noised = all(mode.startswith("noised-clip") for mode in args.modes)
    return NOISED_SECTION if noised else SECTION


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    started = time.perf_counter()
    state = json.loads(args.state.read_text()) if args.table_only else run(args)
    text = section(args, state, (time.perf_counter() - started) / 60, arguments)
    print(text)
    if not args.no_write:
        write_section(REPO / "BENCHMARKS.md", section_title(args), text)


if __name__ == "__main__":
    main()
