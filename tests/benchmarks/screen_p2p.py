"""Screen PromptToPrompt settings for word-swap edits on the demo model, before a 100-pair run.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/screen_p2p.py [--kind shape] [--n 40] [--seed 7] [--threads 1]
        [--variants base plain ...] [--results build/screen_p2p_shape.jsonl] [--no-write]

Each variant in ``VARIANTS`` is a setting of the PromptToPrompt node (and of the CFG scale or
step count of the graph around it), applied in the same way to every pair: the edited word's own
window, a reweight of the edited word and the like name "the edited word", never a choice made
per pair. The pairs are ``editing.edit_pairs(kind, n, seed)`` with Denoise seed ``seed + i``; the
default seed 7 draws other held-out captions than the benchmark's seed 0, so a setting is not
chosen on the pairs that ``bench_p2p.py`` then confirms it on. "plain" draws both captions
separately (no controller): what the demo model reads without prompt-to-prompt.

Every pair's figures are appended to ``--results`` (JSON lines) as they come, and pairs already
there are skipped, so a stopped screen resumes. It prints a markdown section (the edit reads the
new attribute, the source reads its own, median mask and box IoU per variant, and for shape edits
the split by (source, edit) shape) and writes it into BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.adherence import DEFAULT_CFG, DEFAULT_SCHEDULER, DEFAULT_STEPS  # noqa: E402
from nodes.demo.dataset import caption  # noqa: E402
from nodes.demo.editing import EditRunner, Pair, box_iou, edit_pairs, iou  # noqa: E402
from nodes.demo.evaluate import foreground_mask, score  # noqa: E402

SECTION = (
    "## Prompt-to-prompt settings, {kind} edits of draw seed {seed}, {n} pairs "
    "(tests/benchmarks/screen_p2p.py)"
)
"""One section per kind, draw and pair count: the screen (seed 7, 40 pairs), the same draw
widened to 100 pairs for the leaders, and the confirmation on the benchmark's own pairs (seed 0,
the same pictures as ``bench_p2p.py`` draws) stand side by side. A draw's first 40 pairs are the
first 40 of its 100, so one results file per kind and draw serves every count."""

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"plain": True},
    "base": {},
    "self 0": {"self_steps": 0.0},
    "self 0.2, word 0.2": {"self_steps": 0.2, "word_window": 0.2},
    "self 0.1, word 0.1": {"self_steps": 0.1, "word_window": 0.1},
    "self 0.2, word 0.2, cross 0.5": {"self_steps": 0.2, "word_window": 0.2, "cross_steps": 0.5},
    "self 0.2, word 0.2, blend": {"self_steps": 0.2, "word_window": 0.2, "blend": True},
    "self 0.2, word 0.2, blend threshold 0.15": {
        "self_steps": 0.2, "word_window": 0.2, "blend": True, "blend_threshold": 0.15,
    },
    "self 0.2, word and later words 0.2": {"self_steps": 0.2, "later_words_window": 0.2},
    "reweight x0.5": {"reweight_edit": 0.5},
    "reweight x1.5": {"reweight_edit": 1.5},
    "self 0.2, word 0.2, reweight x2": {
        "self_steps": 0.2, "word_window": 0.2, "reweight_edit": 2.0,
    },
    "CFG 5": {"cfg": 5.0},
    "CFG 10": {"cfg": 10.0},
    "self 0.2, word 0.2, 15 steps": {"self_steps": 0.2, "word_window": 0.2, "steps": 15},
    "30 steps": {"steps": 30},
    "plain, ddim": {"plain": True, "scheduler": "ddim"},
    "ddim": {"scheduler": "ddim"},
    "self 0.2, word 0.2, ddim": {"self_steps": 0.2, "word_window": 0.2, "scheduler": "ddim"},
    "self 0.2, word 0.2, dpmpp_2m": {
        "self_steps": 0.2, "word_window": 0.2, "scheduler": "dpmpp_2m",
    },
    "self 0.2, word 0.2, unipc": {"self_steps": 0.2, "word_window": 0.2, "scheduler": "unipc"},
    "self 0.2, word 0": {"self_steps": 0.2, "word_window": 0.0},
    "self 0.3, word 0.1": {"self_steps": 0.3, "word_window": 0.1},
    "self 0.3, word 0.2": {"self_steps": 0.3, "word_window": 0.2},
    "self 0.2, word 0.3": {"self_steps": 0.2, "word_window": 0.3},
    "self 0.4, word 0.2": {"self_steps": 0.4, "word_window": 0.2},
    "self 0.2, word 0.1, 30 steps": {"self_steps": 0.2, "word_window": 0.1, "steps": 30},
    "self 0.15, word 0.15, 30 steps": {"self_steps": 0.15, "word_window": 0.15, "steps": 30},
    "self 0.2, word 0, ddim": {"self_steps": 0.2, "word_window": 0.0, "scheduler": "ddim"},
    "self 0.2, word 0.3, ddim": {"self_steps": 0.2, "word_window": 0.3, "scheduler": "ddim"},
    "self 0.2, word 0.2, ddim, blend": {
        "self_steps": 0.2, "word_window": 0.2, "scheduler": "ddim", "blend": True,
    },
    "self 0.2, word 0.2, 12 steps": {"self_steps": 0.2, "word_window": 0.2, "steps": 12},
}  # fmt: skip
"""Name -> setting. Keys beside PromptToPrompt's own widgets (cross_steps, self_steps,
blend_threshold, blend_start): ``word_window`` (the edited word's ``word_cross_steps``),
``later_words_window`` (that window for the edited word and every later word of the caption not
already before it: CLIP's causal encoder carries the word into them), ``blend`` (``blend_words``:
the source's and the edit's changed word), ``reweight_edit`` (``reweight`` on the edited word),
``cfg``, ``steps``, ``scheduler`` (the Scheduler node's sampler, euler unless named), and
``plain`` (no controller: both captions drawn separately)."""


def node_options(setting: dict[str, Any], pair: Pair) -> dict[str, Any]:
    """PromptToPrompt's widget values for ``pair`` under ``setting`` (see ``VARIANTS``)."""
    source_word, edit_word = pair.words()
    options = {
        key: value
        for key, value in setting.items()
        if key in ("cross_steps", "self_steps", "blend_threshold", "blend_start")
    }
    if "word_window" in setting:
        options["word_cross_steps"] = f"{edit_word}:{setting['word_window']}"
    if "later_words_window" in setting:
        words = caption(pair.edit).split()
        first = words.index(edit_word)
        later = [w for w in words[first:] if w not in words[:first]]
        window = setting["later_words_window"]
        options["word_cross_steps"] = ", ".join(f"{w}:{window}" for w in dict.fromkeys(later))
    if setting.get("blend"):
        options["blend_words"] = f"{source_word} {edit_word}"
    if "reweight_edit" in setting:
        options["reweight"] = f"{edit_word}:{setting['reweight_edit']}"
    return options


def measure(runner: EditRunner, pair: Pair, seed: int, setting: dict[str, Any]) -> dict:
    """One pair's figures under ``setting``."""
    cfg = setting.get("cfg", DEFAULT_CFG)
    source, edit = caption(pair.source), caption(pair.edit)
    if setting.get("plain"):
        pictures = [runner.images(text, seed=seed, cfg=cfg)[0] for text in (source, edit)]
    else:
        options = node_options(setting, pair)
        pictures = runner.pair(source, edit, seed=seed, cfg=cfg, **options)
    masks = [foreground_mask(p) for p in pictures[:2]]
    attribute = f"{pair.kind}_ok"
    return {
        "edit_ok": bool(score(pictures[1], pair.edit)[attribute]),
        "source_ok": bool(score(pictures[0], pair.source)[attribute]),
        "iou": iou(*masks),
        "box_iou": box_iou(*masks),
    }


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MAX_SPLIT = 6
"""The table splits the reading by (source, edit) attribute up to this many groups: the 6 shape
swaps, not the dozens of colour swaps."""


def group_of(pair: Pair) -> tuple[str, str]:
    """The changed attribute's (source, edit) values: ("triangle", "square")."""
    return getattr(pair.source, pair.kind), getattr(pair.edit, pair.kind)


def table(results: list[dict], pairs: list[Pair], names: list[str]) -> str:
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_variant[result["variant"]].append(result)
    groups = sorted({group_of(p) for p in pairs})
    if len(groups) > MAX_SPLIT:
        groups = []
    header = ["setting", "pairs", "edit reads the new attribute", "source reads its own"]
    header += ["median mask IoU", "median box IoU", *(f"{a} -> {b}" for a, b in groups)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        rows = by_variant.get(name)
        if not rows:
            continue
        cells = [
            name,
            str(len(rows)),
            f"{sum(r['edit_ok'] for r in rows) / len(rows):.0%}",
            f"{sum(r['source_ok'] for r in rows) / len(rows):.0%}",
            f"{statistics.median(r['iou'] for r in rows):.3f}",
            f"{statistics.median(r['box_iou'] for r in rows):.3f}",
        ]
        for group in groups:
            members = [r for r in rows if group_of(pairs[r["index"]]) == group]
            cells.append(f"{sum(r['edit_ok'] for r in members)}/{len(members)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--kind", choices=("color", "shape"), default="shape")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = REPO / "build" / f"screen_p2p_{args.kind}_{args.seed}.jsonl"
    args.results = args.results.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "tests/benchmarks/screen_p2p.py", *(sys.argv[1:] if argv is None else argv)]
    )
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pairs = edit_pairs(args.kind, args.n, args.seed)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["variant"], r["index"]) for r in load_results(args.results)}
    runners: dict[tuple[int, str], EditRunner] = {}
    for name in args.variants:
        setting = VARIANTS[name]
        steps = setting.get("steps", DEFAULT_STEPS)
        scheduler = setting.get("scheduler", DEFAULT_SCHEDULER)
        if (steps, scheduler) not in runners:
            runners[steps, scheduler] = EditRunner(args.model, steps=steps, scheduler=scheduler)
        runner = runners[steps, scheduler]
        for index, pair in enumerate(pairs):
            if (name, index) in done:
                continue
            result = measure(runner, pair, args.seed + index, setting)
            with args.results.open("a") as out:
                out.write(json.dumps({"variant": name, "index": index, **result}) + "\n")
        print(f"  {name}: done", file=sys.stderr, flush=True)
    for runner in runners.values():
        runner.close()
    minutes = (time.perf_counter() - started) / 60
    results = [r for r in load_results(args.results) if r["index"] < args.n]
    section = SECTION.format(kind=args.kind, seed=args.seed, n=args.n)
    machine = machine_summary(f"torch threads {args.threads}", f"torch {torch.__version__}")
    text = "\n".join(
        [
            section,
            "",
            f"- Date: {utc_date()}",
            f"- Machine: {machine}",
            f"- Command: `{command.strip()}` ({minutes:.1f} minutes this call; pairs already "
            f"in `{args.results.relative_to(REPO)}` were kept)",
            f"- {args.n} held-out {args.kind} edits of draw seed {args.seed}, PromptToPrompt "
            'replace, negative ""; unnamed settings '
            f"are the node's defaults (cross 0.8, self 0.4), CFG {DEFAULT_CFG:g}, "
            f"{DEFAULT_STEPS} steps, {DEFAULT_SCHEDULER}. "
            '"word": the edited word\'s own cross-attention window '
            '(`word_cross_steps`); "blend": `blend_words` on the changed words; '
            '"reweight": `reweight` on the edited word; "ddim", "dpmpp_2m", "unipc": the '
            'Scheduler\'s sampler; "plain": no controller (the same seed).',
            "",
            table(results, pairs, args.variants),
            "",
        ]
    )
    print(text)
    if args.write:
        write_section(args.markdown, section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
