"""Inpainting on the demo model, measured through nodeflow's own graph.

The benchmark (``tests/benchmarks/bench_inpaint.py``, 100 scenes) and the CI floor test
(``tests/nodes/test_inpaint_demo.py``, a few scenes) both call this module, so the floor asserts
the measurement the benchmark reports. A case is a held-out one-shape scene (``held_out_scenes``)
rendered exactly (``dataset.render``), its shape masked through the picture's alpha (transparent
= repaint, LoadImage's mask), and a caption asking for the same scene in another colour (never
the background's). The graph is ``inpaint_workflow``: by default the crop-and-stitch graph of
``workflows/inpaint.json`` (the shape's surroundings cut out with 8 pixels of context, scaled to
64x64, inpainted, scaled back and pasted), captioned as a user would caption the crop: the shape
large, no position (``crop_caption``). Small shapes are where cropping helps: at the model's full
resolution they are drawn as the large shapes it draws well (81% -> 95%, BENCHMARKS.md).

* The repainted shape reads the new colour (``evaluate.score``'s ``color_ok`` against the
  edited scene) and still the old shape (``shape_ok``).
* Outside the feathered mask (where it is exactly 0) the picture keeps the source: PSNR of the
  final picture (composited through the feathered mask) and of the raw decode before
  compositing (the VAE's decoding of the kept latents, with the repaint bleeding into it; for
  a crop, the scaled-back decode put over the crop's box).

Like the rest of ``nodes.demo`` this is not imported by the nodes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow
from nodes.demo.adherence import DEFAULT_CFG, DEFAULT_STEPS, AdherenceRunner, held_out_scenes
from nodes.demo.dataset import COLORS, Scene, caption, render
from nodes.demo.evaluate import foreground_mask, score

GROW = 2
"""Pixels the shape's mask grows by, so the antialiased edge is repainted too."""
FEATHER = 3
"""The BlurMask radius of the compositing mask: the repainted shape fades into the source."""
CROP_PADDING = 8
"""Context around the grown mask's box when inpainting a crop (None: the whole picture)."""
CROP_SIZE = 64
"""The side a crop is scaled to before inpainting: the demo model's resolution."""


@dataclass(frozen=True)
class Case:
    """A source scene and the same scene in another colour."""

    source: Scene
    edit: Scene


def inpaint_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` held-out scenes of one shape (the first of ``held_out_scenes``' stream), each with
    its shape's colour changed to another drawn at random, never the background's."""
    rng = random.Random(f"inpaint-{seed}")
    drawn = 2 * n
    while len(scenes := [s for s in held_out_scenes(drawn, seed) if s.count == 1]) < n:
        drawn *= 2  # the stream's prefix is the same, so longer draws only add scenes
    cases = []
    for scene in scenes[:n]:
        choices = [c for c in COLORS if c not in (scene.color, scene.background)]
        cases.append(Case(scene, replace(scene, color=rng.choice(choices))))
    return cases


def masked_source(scene: Scene) -> Image.Image:
    """The rendered scene as RGBA, transparent where the shape is (what to repaint)."""
    picture = render(scene).convert("RGB")
    alpha = np.where(foreground_mask(picture), 0, 255).astype(np.uint8)
    rgba = np.dstack([np.asarray(picture), alpha])
    return Image.fromarray(rgba, "RGBA")


def inpaint_workflow(
    image: str,
    prompt: str,
    *,
    model: str,
    cfg: float = DEFAULT_CFG,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    grow: int = GROW,
    feather: int = FEATHER,
    crop_padding: int | None = None,
    crop_size: int = CROP_SIZE,
) -> Workflow:
    """Inpaint with an ordinary checkpoint: LoadImage (its alpha is the mask), GrowMask,
    VAEEncode, SetLatentNoiseMask, Denoise at strength 1, VAEDecode, then the decode pasted on
    the source through the feathered mask (BlurMask, ImageCompositeMasked). Targets ``decode``
    (raw, the size of what was denoised), ``composite`` (final) and ``feather`` (the mask it is
    pasted through: where it is 0 the final picture is the source).

    With ``crop_padding`` (as ``workflows/inpaint.json``) it inpaints a crop instead (crop and
    stitch, diffusers' ``padding_mask_crop``): CropToMask around the grown mask with that much
    context, the crop and its mask scaled to ``crop_size`` (the model's resolution), inpainted,
    the decode scaled back to the crop's size (``crop_down``) and pasted at the crop's place
    through the crop's feathered mask."""
    b = WorkflowBuilder()
    checkpoint = b.add("LoadCheckpoint", id="model", path=model)
    source = b.add("LoadImage", id="source", path=image)
    grown = b.add("GrowMask", id="grow", mask=source.mask, expand=grow, tapered_corners=True)
    picture, mask, x, y = source.image, grown.mask, 0, 0
    if crop_padding is not None:
        crop = b.add("CropToMask", id="crop", image=source.image, mask=grown.mask,
                     padding=crop_padding, multiple_of=8)  # fmt: skip
        picture = b.add("ScaleImage", id="crop_up", image=crop.image, width=crop_size,
                        height=crop_size, method="bicubic").image  # fmt: skip
        mask = b.add("ScaleMask", id="mask_up", mask=crop.mask, width=crop_size,
                     height=crop_size, method="bilinear").mask  # fmt: skip
        x, y = crop.x, crop.y
    soft = b.add("BlurMask", id="feather", mask=grown.mask if crop_padding is None else crop.mask,
                 radius=feather)  # fmt: skip
    encoded = b.add("VAEEncode", id="encode", vae=checkpoint.vae, image=picture)
    masked = b.add("SetLatentNoiseMask", id="noise_mask", latent=encoded.latent, mask=mask)
    pos = b.add("TextEncode", id="pos", text_encoder=checkpoint.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=checkpoint.text_encoder, text="")
    sched = b.add("Scheduler", id="sched", unet=checkpoint.unet, name="euler", steps=steps)
    guider = b.add("CFG", id="cfg", unet=checkpoint.unet, positive=pos.conditioning,
                   negative=neg.conditioning, scale=cfg)  # fmt: skip
    den = b.add("Denoise", id="denoise", guider=guider.guider, scheduler=sched.scheduler,
                latent=masked.latent, seed=seed, strength=1.0)  # fmt: skip
    decoded = b.add("VAEDecode", id="decode", vae=checkpoint.vae, latent=den.latent).image
    if crop_padding is not None:
        decoded = b.add("ScaleImage", id="crop_down", image=decoded, width=crop.width,
                        height=crop.height, method="area").image  # fmt: skip
    b.add("ImageCompositeMasked", id="composite", destination=source.image,
          source=decoded, x=x, y=y, mask=soft.mask)  # fmt: skip
    return b.build()


def crop_caption(scene: Scene) -> str:
    """The caption a user would write for the crop of ``scene``'s one shape: the crop scaled to
    the model's size shows the shape large and in the middle, so it says ``large`` and no
    position."""
    return caption(replace(scene, size="large", position=None))


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB of two float pictures in 0..1 over the pixels ``where`` is true (inf when
    they are equal there)."""
    error = float(((a - b) ** 2)[where].mean())
    return math.inf if error == 0 else 10 * math.log10(1.0 / error)


class InpaintRunner(AdherenceRunner):
    """An ``AdherenceRunner`` (one Executor, the model loaded once) that inpaints cases."""

    def inpaint(
        self,
        case: Case,
        *,
        seed: int = 0,
        crop_padding: int | None = CROP_PADDING,
        grow: int = GROW,
        crop_wording: bool = True,
    ) -> dict[str, Any]:
        """One case's figures and pictures (``final``, ``raw``, ``source``: floats [64, 64, 3]),
        drawn with Denoise seed ``seed``. With ``crop_padding`` (the default) the crop around the
        mask is inpainted (``inpaint_workflow``), captioned as the crop shows the shape
        (``crop_caption``) unless ``crop_wording`` is false; ``raw`` is then the source with the
        scaled-back decode pasted over the crop unmasked."""
        executor = self.executor()
        name = f"inpaint-{seed}.png"  # a file per case: LoadImage's cache key is its file's
        folder = Path(executor.env.input_dir)
        folder.mkdir(parents=True, exist_ok=True)
        masked_source(case.source).save(folder / name)
        cropped = crop_padding is not None
        prompt = crop_caption(case.edit) if cropped and crop_wording else caption(case.edit)
        workflow = inpaint_workflow(
            name, prompt, model=self.model, steps=self.steps, seed=seed, grow=grow,
            crop_padding=crop_padding,
        )  # fmt: skip
        targets = ["decode", "composite", "feather"] + (["crop", "crop_down"] if cropped else [])
        result = executor.run(workflow, targets=targets)
        if not result.ok:
            detail = result.error.traceback if result.error else result.status
            raise RuntimeError(f"the inpaint workflow failed:\n{detail}")
        final = result.values["composite"]["image"].pixels[0].float().numpy()
        pasted = result.values["feather"]["mask"].values[0].numpy() == 0
        source = np.asarray(render(case.source).convert("RGB"), dtype=np.float32) / 255.0
        if cropped:  # the crop's mask, and its decode, put at the crop's place
            crop = result.values["crop"]
            top, left = crop["y"], crop["x"]
            box = np.s_[top : top + crop["height"], left : left + crop["width"]]
            outside = np.ones(source.shape[:2], bool)
            outside[box] = pasted
            raw = source.copy()
            raw[box] = result.values["crop_down"]["image"].pixels[0].float().numpy()
        else:
            outside = pasted
            raw = result.values["decode"]["image"].pixels[0].float().numpy()
        self.pictures += 1
        scored = score(final, case.edit)
        return {
            "color_ok": bool(scored["color_ok"]),
            "shape_ok": bool(scored["shape_ok"]),
            "psnr_outside": psnr(final, source, outside),
            "raw_psnr_outside": psnr(raw, source, outside),
            "outside_share": float(outside.mean()),
            "final": final,
            "raw": raw,
            "source": source,
        }
