"""Pictures in and out: PNG files with the workflow embedded, so a picture restores its graph."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from nodeflow import Context, Environment, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.paths import contained
from nodes.types import Image, Mask

WORKFLOW_CHUNK = "workflow"
"""The PNG text chunk holding the workflow JSON that made the picture."""


Rounding = Literal["nearest", "truncate"]
"""How a float picture becomes 8 bits: to the nearest level, or ComfyUI's way (its SaveImage
casts ``255 * x`` to uint8, dropping the fraction), so an imported workflow saves its PNGs."""


def to_pil(image: Image, rounding: Rounding = "nearest") -> list[Any]:
    from PIL import Image as PILImage

    scaled = image.pixels.clamp(0, 1).numpy() * 255
    array = (scaled.round() if rounding == "nearest" else scaled).astype("uint8")
    return [PILImage.fromarray(picture, "RGB") for picture in array]


def from_pil(picture: Any) -> Image:
    import numpy as np
    import torch

    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return Image(torch.from_numpy(array)[None])


ASSETS = Path(__file__).parent / "assets"
"""Example pictures shipped with the pack, so the example workflows run as shipped."""


def resolve_input(path: str, env: Environment) -> Path:
    """A picture in the input dir, an absolute path, or one of the pack's example pictures."""
    resolved = contained(env.input_dir, path)
    if resolved.is_file():
        return resolved
    example = contained(ASSETS, path)
    if example.is_file():
        return example
    raise FileNotFoundError(f"no image {path!r} (looked in {env.input_dir} and as a path)")


def _input_fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    return file_identity(resolve_input(values["path"], env))


def alpha_mask(picture: Any) -> Mask:
    """The picture's transparency as a mask, ``1 - alpha`` (ComfyUI's LoadImage convention: what
    a brush erased to transparent is what inpainting repaints); all zeros when it has no alpha."""
    import numpy as np
    import torch

    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if "A" not in picture.getbands():
        return Mask(torch.zeros((1, picture.height, picture.width)))
    alpha = np.asarray(picture.getchannel("A"), dtype=np.float32) / 255.0
    return Mask(1.0 - torch.from_numpy(alpha)[None])


class LoadedImage(NamedTuple):
    image: Image
    mask: Mask
    """1 - alpha (transparent = selected), or an empty mask of the picture's size."""


@node("LoadImage", category="image", fingerprint=_input_fingerprint)
def load_image(ctx: Context, path: Annotated[str, Widget(files="input")]) -> LoadedImage:
    """Load a picture from the input dir (or an absolute path, or a bundled example) as RGB,
    and its alpha channel as a mask (1 where transparent, ComfyUI's convention)."""
    from PIL import Image as PILImage

    with PILImage.open(resolve_input(path, ctx.env)) as picture:
        return LoadedImage(image=from_pil(picture), mask=alpha_mask(picture))


def _next_counter(folder: Path, stem: str) -> int:
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)\.png$")
    numbers = [
        int(m.group(1)) for p in folder.glob(f"{stem}_*.png") if (m := pattern.match(p.name))
    ]
    return max(numbers, default=0) + 1


def write_pngs(
    image: Image, folder: Path, prefix: str, workflow: Any, rounding: Rounding = "nearest"
) -> list[Path]:
    from PIL.PngImagePlugin import PngInfo

    target = contained(folder, prefix)
    if Path(prefix).is_absolute():
        raise ValueError(f"prefix {prefix!r} must be a name inside the output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    if workflow is not None:
        info.add_text(WORKFLOW_CHUNK, json.dumps(workflow))
    counter = _next_counter(target.parent, target.name)
    written = []
    for offset, picture in enumerate(to_pil(image, rounding)):
        path = target.parent / f"{target.name}_{counter + offset:05d}.png"
        picture.save(path, pnginfo=info, compress_level=4)
        written.append(path)
    return written


def _report(paths: list[Path], folder: Path, kind: str) -> dict[str, Any]:
    return {
        "files": [str(p) for p in paths],
        "images": [
            {
                "filename": p.name,
                "subfolder": str(p.parent.relative_to(folder.resolve())),
                "type": kind,
            }
            for p in paths
        ],
    }


@node("SaveImage", category="image", output_node=True)
def save_image(
    ctx: Context, image: Image, prefix: str = "nodeflow", rounding: Rounding = "nearest"
) -> dict:
    """Save pictures as PNG in the output dir, with the workflow embedded for the editor.

    ``rounding``: ``truncate`` drops the fraction of each 8-bit level as ComfyUI does, so a
    workflow imported from ComfyUI saves the PNG bytes ComfyUI would."""
    paths = write_pngs(image, ctx.env.output_dir, prefix, ctx.workflow, rounding)
    return _report(paths, ctx.env.output_dir, "output")


@node("PreviewImage", category="image", output_node=True)
def preview_image(ctx: Context, image: Image) -> dict:
    """Show pictures without keeping them: written to the output dir's previews/ folder."""
    folder = ctx.env.output_dir / "previews"
    paths = write_pngs(image, folder, f"preview-{ctx.run_id[:8]}", None)
    return _report(paths, ctx.env.output_dir, "preview")
