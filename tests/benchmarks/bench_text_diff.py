"""Text diffs (DALL-E 2, section 3.3) with demo-clip: does an edited embedding read as the edit?

Run from the repository root (on demand, not in CI; the CI floor is
``tests/nodes/test_text_edits.py``, which calls the same code in ``nodes.demo.text_edits``)::

    python tests/benchmarks/bench_text_diff.py [--n 100] [--threads 1] [--no-write]

``--n`` held-out scenes, each with one edit: a changeable attribute (colour, shape, size,
background, position) and another value of it, chosen at random with a fixed seed. The scene's
demo-clip image embedding is moved by ``TextDiff`` toward normalize(text(target caption) -
text(source caption)) at each theta. Per theta: how often the nearest caption among the edited
attribute's one-word variants is the target (flipped), how often every other attribute's
nearest variant is still the target scene's (stayed), and both; then, at each theta, both by
edited attribute. It prints a markdown section and writes it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.retrieval import load_demo_clip  # noqa: E402
from nodes.demo.text_edits import EDITS_SEED, make_edits, measure  # noqa: E402
from nodes.demo.variants import ATTRIBUTES  # noqa: E402
from nodes.loaders import DEMO_CLIP, SHIPPED  # noqa: E402

SECTION = "## Text diffs with demo-clip (tests/benchmarks/bench_text_diff.py)"
THETAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    clip = load_demo_clip(SHIPPED / DEMO_CLIP)
    pictures, edits = make_edits(args.n)
    results = measure(clip, pictures, edits, THETAS)
    seconds = time.perf_counter() - started

    machine = machine_summary(
        f"torch {torch.__version__}", f"transformers {transformers.__version__}"
    )
    lines = [
        SECTION,
        "",
        f"{utc_date()}; {machine}; --threads {args.threads}; {seconds:.0f} s in all.",
        "",
        f'{args.n} held-out scenes (`dataset({EDITS_SEED}, n, split="held_out")`), one edit '
        "each (`nodes/demo/text_edits.py`): a random changeable attribute and another value of "
        "it. TextDiff slerps the scene's demo-clip image embedding toward "
        "normalize(text(target) - text(source)) by theta. *Flipped*: the nearest caption among "
        "the edited attribute's one-word variants is the target. *Stayed*: for every other "
        "attribute, the nearest among the target scene's variants in it is the target. Judged "
        "by demo-clip itself (no decoder takes its embeddings).",
        "",
        "| theta | flipped | stayed | both |",
        "|---|---|---|---|",
    ]
    for theta, r in results.items():
        lines.append(f"| {theta:.1f} | {r['flipped']:.0%} | {r['stayed']:.0%} | {r['both']:.0%} |")
    present = [a for a in ATTRIBUTES if a in results[THETAS[0]]["by_attribute"]]
    counts = results[THETAS[0]]["by_attribute"]
    lines += [
        "",
        "Both (flipped and stayed), by edited attribute (edits of it):",
        "",
        "| theta | " + " | ".join(f"{a} ({counts[a][0]})" for a in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for theta, r in results.items():
        by = r["by_attribute"]
        cells = " | ".join(f"{by[a][2] / by[a][0]:.0%}" for a in present)
        lines.append(f"| {theta:.1f} | {cells} |")
    best = max(results, key=lambda t: results[t]["both"])
    lines += [
        "",
        f"Best theta here: {best:.1f} ({results[best]['both']:.0%} flipped with the rest kept). "
        "At theta 0 the embedding is the picture's own, so *flipped* counts only demo-clip's "
        "misreadings of the picture and *stayed* is its plain retrieval of every other "
        "attribute at once (position is its weak one); past the best theta the embedding turns "
        "toward the bare text direction and loses the picture's other attributes.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(REPO / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
