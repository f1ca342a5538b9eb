"""Does CLIP guidance raise the CLIP similarity it follows? A diagnostic beside bench_guidance.

    python tests/benchmarks/bench_clip_similarity.py [--n 25] [--scales 0 30 100]

Samples the first ``--n`` held-out captions exactly as ``bench_guidance.py`` does (its batch 0:
same seed, steps, CFG and modes ``clip-cfg`` and ``clip-uncond``) and prints, per scale, the
mean cosine similarity between ``demo-clip``'s embedding of each final picture and of its own
caption. Set against the evaluator's scores in BENCHMARKS.md, it tells whether guidance fails to
move CLIP or moves CLIP without moving what the picture shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guidance import Bench, parse_args


def main() -> None:
    import torch

    from nodes.clip_model import image_features, text_features
    from nodes.demo.adherence import held_out_scenes
    from nodes.demo.dataset import caption

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 30, 100])
    parser.add_argument("--threads", type=int, default=1)
    own = parser.parse_args()
    torch.set_num_threads(own.threads)
    bench = Bench(parse_args(["--modes", "clip-cfg", "clip-uncond"]))
    scenes = held_out_scenes(own.n, 0)
    text = text_features(bench.clip, [caption(s) for s in scenes], normalize=True)
    for mode in ("clip-cfg", "clip-uncond"):
        for scale in own.scales:
            pixels = bench.pictures(mode, scale, scenes, 0).permute(0, 3, 1, 2)
            with torch.no_grad():
                image = image_features(bench.clip, pixels, normalize=True)
            similarity = float((image * text).sum(-1).mean())
            print(f"{mode} scale {scale:g}: mean CLIP similarity to own caption {similarity:.4f}")


if __name__ == "__main__":
    main()
