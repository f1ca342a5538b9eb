"""Prompt-to-prompt edit fidelity and attention-map localisation on a demo model, measured
through nodeflow's own graphs.

The benchmark (``tests/benchmarks/bench_p2p.py``, 100 pairs per kind) and the CI floor test
(``tests/nodes/test_p2p_demo.py``, a few pairs) both call this module, so the floor asserts the
measurement the benchmark reports. Held-out captions (``adherence.held_out_scenes``) are edited
in one attribute: the colour word (to another colour, not the background's) or the shape word.

* Edit fidelity: the edited picture of a pair reads the new attribute (``evaluate.score``), and
  the shape masks (``evaluate.foreground_mask``) of the pair's source and edit overlap (IoU).
  The baseline is the same two captions drawn separately with the same seed, no controller.
  Beside the masks' IoU, the IoU of their bounding boxes: where the shapes lie and how far they
  extend, which a shape edit can keep exactly while the masks' IoU cannot reach 1.
* Reweighting: one word's factor swept; the picture's colour coverage (pixels nearest the word's
  palette colour), saturation and shape area, per factor.
* Localisation: the share of a shape word's cross-attention map (all recorded sizes, upsampled
  to the picture) that falls inside the drawn shapes' mask, against the mask's share of the
  picture (what a map spread evenly would score).

Like the rest of ``nodes.demo`` this is not imported by the nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow
from nodes.demo.adherence import (
    DEFAULT_CFG,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    AdherenceRunner,
    add_sampling,
    held_out_scenes,
)
from nodes.demo.dataset import COLORS, PALETTE, SHAPES, Scene, caption
from nodes.demo.evaluate import MIN_AREA_FRACTION, foreground_mask, score, to_rgb_array

__all__ = [
    "EditRunner",
    "Pair",
    "box_iou",
    "edit_pairs",
    "edit_workflow",
    "iou",
    "map_share",
    "picture_measures",
]


@dataclass(frozen=True)
class Pair:
    """A source scene and its one-attribute edit (``kind``: "color" or "shape")."""

    kind: str
    source: Scene
    edit: Scene

    def words(self) -> tuple[str, str]:
        """The changed word as the source's and the edit's captions write it: ("red",
        "green"), or ("circles", "squares") for two or three shapes."""
        if self.kind == "color":
            return self.source.color, self.edit.color
        plural = "s" if self.source.count > 1 else ""
        return self.source.shape + plural, self.edit.shape + plural


def edit_pairs(kind: str, n: int, seed: int = 0) -> list[Pair]:
    """``n`` held-out scenes, each with its colour (or shape) changed to another drawn at random;
    a new colour never equals the background (the caption would be self-contradictory)."""
    rng = random.Random(f"p2p-{kind}-{seed}")
    pairs = []
    for scene in held_out_scenes(n, seed):
        if kind == "color":
            choices = [c for c in COLORS if c not in (scene.color, scene.background)]
            edited = replace(scene, color=rng.choice(choices))
        elif kind == "shape":
            edited = replace(scene, shape=rng.choice([s for s in SHAPES if s != scene.shape]))
        else:
            raise ValueError(f"unknown edit kind {kind!r}")
        pairs.append(Pair(kind, scene, edited))
    return pairs


def edit_workflow(
    source: str,
    edit: str,
    *,
    model: str,
    mode: str = "replace",
    cross_steps: float = 0.8,
    self_steps: float = 0.4,
    reweight: str = "",
    blend_words: str = "",
    blend_threshold: float = 0.3,
    word_cross_steps: str = "",
    blend_start: float = 0.2,
    cfg: float = DEFAULT_CFG,
    steps: int = DEFAULT_STEPS,
    scheduler: str = DEFAULT_SCHEDULER,
    seed: int = 0,
) -> Workflow:
    """The edit graph (target ``decode``, a batch [source, edit]): LoadCheckpoint,
    PromptToPrompt, TextEncode(""), Scheduler (``scheduler``: its sampler), CFG, EmptyLatent
    (batch 1), Denoise, VAEDecode."""
    b = WorkflowBuilder()
    checkpoint = b.add("LoadCheckpoint", id="model", path=model)
    p2p = b.add(
        "PromptToPrompt",
        id="p2p",
        unet=checkpoint.unet,
        text_encoder=checkpoint.text_encoder,
        source=source,
        edit=edit,
        mode=mode,
        cross_steps=cross_steps,
        self_steps=self_steps,
        reweight=reweight,
        blend_words=blend_words,
        blend_threshold=blend_threshold,
        word_cross_steps=word_cross_steps,
        blend_start=blend_start,
    )
    neg = b.add("TextEncode", id="neg", text_encoder=checkpoint.text_encoder, text="")
    add_sampling(b, p2p.unet, checkpoint.vae, p2p.conditioning, neg.conditioning, cfg=cfg,
                 steps=steps, seed=seed, scheduler=scheduler)  # fmt: skip
    return b.build()


def recording_workflow(
    prompt: str, *, model: str, cfg: float = DEFAULT_CFG, steps: int = DEFAULT_STEPS, seed: int = 0
) -> Workflow:
    """txt2img with RecordAttention on the U-Net (targets ``decode`` and ``denoise``)."""
    b = WorkflowBuilder()
    checkpoint = b.add("LoadCheckpoint", id="model", path=model)
    unet = b.add("RecordAttention", id="record", unet=checkpoint.unet).unet
    pos = b.add("TextEncode", id="pos", text_encoder=checkpoint.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=checkpoint.text_encoder, text="")
    add_sampling(b, unet, checkpoint.vae, pos.conditioning, neg.conditioning, cfg=cfg,
                 steps=steps, seed=seed)  # fmt: skip
    return b.build()


class EditRunner(AdherenceRunner):
    """An ``AdherenceRunner`` (one Executor, model loaded once) that also draws edit pairs and
    records attention."""

    def _run(self, workflow: Workflow, targets: list[str]) -> Any:
        result = self.executor().run(workflow, targets=targets)
        if not result.ok:
            detail = result.error.traceback if result.error else result.status
            raise RuntimeError(f"the workflow failed:\n{detail}")
        return result.values

    def pair(self, source: str, edit: str, *, seed: int = 0, **options: Any) -> np.ndarray:
        """The pictures [source, edit] of one prompt-to-prompt pair, floats [2, 64, 64, 3]."""
        workflow = edit_workflow(
            source,
            edit,
            model=self.model,
            steps=self.steps,
            scheduler=self.scheduler,
            seed=seed,
            **options,
        )
        values = self._run(workflow, ["decode"])
        return values["decode"]["image"].pixels.float().cpu().numpy()

    def recorded(self, prompt: str, *, seed: int = 0) -> tuple[np.ndarray, Any, Any]:
        """(picture [64, 64, 3], its AttentionStore, the tokenizer) of a plain generation."""
        workflow = recording_workflow(prompt, model=self.model, steps=self.steps, seed=seed)
        values = self._run(workflow, ["decode", "denoise", "model"])
        picture = values["decode"]["image"].pixels[0].float().cpu().numpy()
        tokenizer = values["model"]["text_encoder"].tokenizer
        return picture, values["denoise"]["attention"], tokenizer


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), inclusive, of the objects in a mask as ``evaluate.analyze``
    counts them (8-connected components, holes filled, of at least ``MIN_AREA_FRACTION`` of the
    largest), so a stray speck does not stretch the box; None for an empty mask."""
    from scipy import ndimage

    labels, found = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if not found:
        return None
    boxes = ndimage.find_objects(labels)
    areas = [int(ndimage.binary_fill_holes(labels[b] == i + 1).sum()) for i, b in enumerate(boxes)]
    kept = [
        b for b, area in zip(boxes, areas, strict=True) if area >= MIN_AREA_FRACTION * max(areas)
    ]
    return (
        min(b[0].start for b in kept),
        min(b[1].start for b in kept),
        max(b[0].stop for b in kept) - 1,
        max(b[1].stop for b in kept) - 1,
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks' bounding boxes (1.0 when both are empty, 0.0 when one is).

    The layout measure that means something for a shape edit: a circle drawn where a square
    was covers pi/4 of the square's box, a triangle half of it, so the masks' own IoU cannot
    reach 1 even for a perfect edit, while their boxes coincide. For several shapes the box
    holds them all: it measures where the group lies and how far it extends. Specks the
    evaluator ignores are ignored here too (``bounding_box``)."""
    box_a, box_b = bounding_box(a), bounding_box(b)
    if box_a is None or box_b is None:
        return 1.0 if box_a is box_b else 0.0
    top, left = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    bottom, right = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    inter = max(0, bottom - top + 1) * max(0, right - left + 1)

    def area(box: tuple[int, int, int, int]) -> int:
        return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)

    return inter / (area(box_a) + area(box_b) - inter)


def pair_result(pair: Pair, pictures: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """One pair's figures: ``pictures`` [source, edit] from prompt-to-prompt, ``baseline``
    [source, edit] drawn separately with the same seed."""
    attribute = f"{pair.kind}_ok"
    masks = [foreground_mask(p) for p in pictures[:2]]
    baseline_masks = [foreground_mask(p) for p in baseline[:2]]
    return {
        "edit_ok": bool(score(pictures[1], pair.edit)[attribute]),
        "source_ok": bool(score(pictures[0], pair.source)[attribute]),
        "iou": iou(*masks),
        "box_iou": box_iou(*masks),
        "baseline_edit_ok": bool(score(baseline[1], pair.edit)[attribute]),
        "baseline_iou": iou(*baseline_masks),
        "baseline_box_iou": box_iou(*baseline_masks),
    }


def picture_measures(picture: np.ndarray, color: str | None = None) -> dict[str, float]:
    """Shape area (pixels of the 64x64 mask), mean saturation of the shape pixels, and with a
    colour the number of pixels whose nearest palette colour is it."""
    rgb = to_rgb_array(picture)
    mask = foreground_mask(picture)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = (high - low) / np.maximum(high, 1.0)
    measures = {
        "area": float(mask.sum()),
        "saturation": float(saturation[mask].mean()) if mask.any() else 0.0,
    }
    if color is not None:
        palette = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)
        nearest = np.linalg.norm(rgb[..., None, :] - palette, axis=-1).argmin(axis=-1)
        measures["coverage"] = float((nearest == COLORS.index(color)).sum())
    return measures


def map_share(store: Any, positions: list[int], mask: np.ndarray, above_min: bool = False) -> float:
    """The share of the tokens' attention on the finest recorded feature map (upsampled
    bilinearly to the mask) that falls inside ``mask``. With ``above_min`` the map's minimum is
    taken off first: a softmax never reaches 0, and the even floor every cell gets says nothing
    about where the word is."""
    import torch
    import torch.nn.functional as F

    from nodes.attention_maps import combined_maps

    finest = max(height for height, _ in store.maps)
    maps = combined_maps(store, finest)[0, :, :, positions].sum(dim=-1)
    if above_min:
        maps = maps - maps.min()
    size = mask.shape
    up = F.interpolate(maps[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp_min(0)
    total = float(up.sum())
    inside = float(up[torch.from_numpy(mask)].sum())
    return inside / total if total > 0 else 0.0


def localisation(runner: EditRunner, scene: Scene, seed: int) -> dict[str, float]:
    """The shape word's map share inside the drawn shapes (raw and above the map's minimum), the
    last word's (raw), and the shapes' share of the picture (what an even map scores)."""
    from nodes.p2p_tokens import positions_of

    text = caption(scene)
    picture, store, tokenizer = runner.recorded(text, seed=seed)
    word = scene.shape + ("s" if scene.count > 1 else "")
    positions = positions_of(tokenizer, text, word)
    mask = foreground_mask(picture)
    last = positions_of(tokenizer, text, text.split()[-1])
    return {
        "share": map_share(store, positions, mask),
        "share_above_min": map_share(store, positions, mask, above_min=True),
        "last_word_share": map_share(store, last, mask),
        "area": float(mask.mean()),
        "map_size": float(max(height for height, _ in store.maps)),
    }
