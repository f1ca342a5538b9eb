"""Where a word's cross-attention lands, per feature-map size, on the demo model.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/bench_map_localisation.py [--n 20] [--seed 2] [--threads 1]
        [--markdown BENCHMARKS.md] [--no-write]

``--n`` held-out captions (``nodes.demo.adherence.held_out_scenes(n, seed)``, as
``bench_p2p.py``'s localisation draws them; Denoise seed i for caption i) drawn with
RecordAttention (euler 20 steps, CFG 7.5). For each recorded map size, the shape word's map
(summed over its tokens, averaged over layers and steps, its minimum taken off) is upsampled
bilinearly to 64x64, and the share of its mass inside the drawn shapes
(``evaluate.foreground_mask``) is averaged; an even map scores the shapes' share of the picture.
PromptToPrompt's local blend draws its mask from one map size (``nodes.p2p.LocalBlend``); this
is the measurement behind which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## Attention-map localisation per map size (tests/benchmarks/bench_map_localisation.py)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "python tests/benchmarks/bench_map_localisation.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )

    import torch
    import torch.nn.functional as F

    from nodes.attention_maps import combined_maps
    from nodes.demo.adherence import held_out_scenes
    from nodes.demo.dataset import caption
    from nodes.demo.editing import EditRunner
    from nodes.demo.evaluate import foreground_mask
    from nodes.p2p_tokens import positions_of

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    runner = EditRunner(args.model)
    shares: dict[int, list[float]] = {}
    areas = []
    for i, scene in enumerate(held_out_scenes(args.n, args.seed)):
        text = caption(scene)
        picture, store, tokenizer = runner.recorded(text, seed=i)
        word = scene.shape + ("s" if scene.count > 1 else "")
        positions = positions_of(tokenizer, text, word)
        mask = torch.from_numpy(foreground_mask(picture))
        areas.append(float(mask.float().mean()))
        for size in sorted({height for height, _ in store.maps}):
            maps = combined_maps(store, size)[0, :, :, positions].sum(dim=-1)
            maps = maps - maps.min()
            up = F.interpolate(maps[None, None], size=mask.shape, mode="bilinear")[0, 0]
            up = up.clamp_min(0)
            total = float(up.sum())
            shares.setdefault(size, []).append(float(up[mask].sum()) / total if total else 0.0)
    runner.close()
    minutes = (time.perf_counter() - started) / 60
    machine = machine_summary(f"torch threads {args.threads}", f"torch {torch.__version__}")
    area = statistics.fmean(areas)
    rows = [
        f"| {size}x{size} | {statistics.fmean(v):.1%} | "
        f"{sum(s > a for s, a in zip(v, areas, strict=True))} of {len(v)} |"
        for size, v in sorted(shares.items(), reverse=True)
    ]
    text = "\n".join(
        [
            SECTION,
            "",
            f"- Date: {utc_date()}",
            f"- Machine: {machine}",
            f"- Command: `{command.strip()}`",
            f'- Settings: model `{args.model}`, euler 20 steps, CFG 7.5, negative ""; '
            f"{args.n} held-out captions (`held_out_scenes({args.n}, {args.seed})`), Denoise "
            f"seed = caption index. {minutes:.1f} minutes.",
            "",
            f"The drawn shapes cover {area:.1%} of the picture on average: what an even map "
            "scores.",
            "",
            "| map size | shape word's mass (above its minimum) inside the shapes, mean "
            "| captions above the shapes' share |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
