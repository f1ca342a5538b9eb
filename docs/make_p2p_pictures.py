"""Render the README's prompt-to-prompt and attention-map pictures into docs/.

Run from the repository root: ``python docs/make_p2p_pictures.py``. It runs the shipped
workflows (``workflows/p2p_replace.json``, ``p2p_reweight.json``, ``attention_maps.json``) and the
same PromptToPrompt graph on a few more edits (``nodes.demo.editing.edit_workflow``), on the
built-in demo model, and lays the 64x64 pictures out upscaled 3x with labels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from nodeflow.workflow import Workflow  # noqa: E402
from nodes.demo.editing import EditRunner  # noqa: E402
from nodes.image import to_pil  # noqa: E402

SCALE = 3
EDITS = [
    ("a large red circle on a blue background", "a large green circle on a blue background", 1),
    (
        "a large yellow square on a purple background",
        "a large white square on a purple background",
        2,
    ),
    (
        "two small orange triangles on a black background",
        "two small blue triangles on a black background",
        3,
    ),
    ("a large red circle on a blue background", "a large red square on a blue background", 1),
]
FACTORS = (0.0, 1.0, 2.0, 4.0, 8.0)


def tile(pictures: list[tuple[str, Image.Image]], columns: int) -> Image.Image:
    """Labelled cells, ``columns`` per row, on white."""
    font = ImageFont.load_default()
    size, strip, pad = 64 * SCALE, 16, 6
    rows = (len(pictures) + columns - 1) // columns
    canvas = Image.new(
        "RGB", (columns * (size + pad) + pad, rows * (size + strip + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for index, (label, picture) in enumerate(pictures):
        row, column = divmod(index, columns)
        left, top = pad + column * (size + pad), pad + row * (size + strip + pad)
        draw.text((left + 2, top + 2), label, fill=(40, 40, 40), font=font)
        canvas.paste(picture.resize((size, size), Image.Resampling.NEAREST), (left, top + strip))
    return canvas


def pil(array: object) -> Image.Image:
    import numpy as np

    return Image.fromarray((np.clip(array, 0, 1) * 255).round().astype("uint8"), "RGB")


def main() -> None:
    runner = EditRunner("demo")
    cells = []
    for source, edit, seed in EDITS:
        pair = runner.pair(source, edit, seed=seed)
        changed = next(e for s, e in zip(source.split(), edit.split(), strict=True) if s != e)
        cells += [(source.split(" on ")[0], pil(pair[0])), (f"-> {changed} (p2p)", pil(pair[1]))]
        alone = runner.images(edit, seed=seed)[0]
        cells.append((f"{changed}, no p2p", pil(alone)))
    tile(cells, 3).save(REPO / "docs" / "p2p_replace.png")

    text = "a large red circle on a blue background"
    sweep = []
    for factor in FACTORS:
        pair = runner.pair(text, "", mode="reweight", reweight=f"red:{factor}", seed=1)
        sweep.append((f"red x{factor:g}", pil(pair[1])))
    tile(sweep, len(sweep)).save(REPO / "docs" / "p2p_reweight.png")

    workflow = Workflow.load(REPO / "workflows" / "attention_maps.json")
    result = runner.executor().run(workflow, targets=["maps"])
    assert result.ok, result.error
    to_pil(result.values["maps"]["image"])[0].save(REPO / "docs" / "attention_maps.png")
    runner.close()


if __name__ == "__main__":
    main()
