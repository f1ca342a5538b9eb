"""Screen demo-sd3 checkpoints: prompt adherence of several model folders on the same held-out
captions, to choose which one to ship before the full 200-caption benchmark
(``bench_flow_vs_ddpm.py``) measures it.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/screen_sd3.py FOLDER [FOLDER ...] [--n 50] [--steps 8 20]
        [--cfg 7] [--shift 0] [--seed 0] [--threads 1]

``FOLDER`` is anything ``LoadCheckpoint`` takes (``demo-sd3``, a diffusers folder, a
``train_sd3 --export`` checkpoint). Every folder and step count draws the first ``--n`` held-out
captions (``nodes.demo.adherence.held_out_scenes``) with Denoise seed ``--seed`` + caption index
through nodeflow's standard graph, so the rows are paired. It prints a markdown table; it writes
nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodes.demo.adherence import AdherenceRunner, held_out_scenes, summarize  # noqa: E402

COLUMNS = ("caption_ok", "background_ok", "color_ok", "shape_ok", "count_ok", "size_ok")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--shift", type=float, default=0.0, help="0: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    scenes = held_out_scenes(args.n, args.seed)
    names = " | ".join(c.removesuffix("_ok") for c in COLUMNS)
    print(f"| model | steps | {names} | s/picture |\n" + "|---" * (len(COLUMNS) + 3) + "|")
    for folder in args.folders:
        model = str(Path(folder).resolve()) if Path(folder).exists() else folder
        for steps in args.steps:
            runner = AdherenceRunner(model, steps=steps, shift=args.shift)
            started = time.perf_counter()
            summary = summarize(runner.run(scenes, cfg=args.cfg, seed=args.seed))
            seconds = (time.perf_counter() - started) / len(scenes)
            runner.close()
            cells = " | ".join(f"{100 * (summary[c] or 0):.0f}%" for c in COLUMNS)
            print(f"| {folder} | {steps} | {cells} | {seconds:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
