"""Loading Stable Diffusion models from the models dir, offline, once per process.

``path: "demo"`` names the built-in default model when the models dir has no model by that name,
so the example workflows run straight after install. Until the trained demo model ships, that is
the tiny random model (its pictures are noise), made on first use in nodeflow's home folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from nodeflow import Context, Environment, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.paths import contained, nodeflow_home
from nodes.types import VAE, TextEncoder, UNet

DEMO = "demo"
DEMO_VERSION = "tiny-sd-1"
Dtype = Literal["auto", "fp32", "fp16", "bf16"]


class CheckpointParts(NamedTuple):
    unet: UNet
    text_encoder: TextEncoder
    vae: VAE


def resolve_checkpoint(name: str, env: Environment) -> Path:
    """A checkpoint's folder: under checkpoints/ (or diffusers/), an absolute path, or the demo."""
    for kind in ("checkpoints", "diffusers"):
        candidate = contained(env.models_dir / kind, name)
        if candidate.exists():
            return candidate
    if name == DEMO:
        return demo_model()
    searched = env.models_dir / "checkpoints"
    raise FileNotFoundError(f"no checkpoint {name!r} (looked in {searched} and as a path)")


def demo_model() -> Path:
    """The built-in default model's folder, made once (atomically) on first use."""
    path = nodeflow_home() / "models" / DEMO_VERSION
    if (path / "model_index.json").exists():
        return path
    from nodes.tiny import make_tiny_sd

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".making-", dir=path.parent))
    make_tiny_sd(staging)
    try:
        staging.rename(path)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return path


def quiet_hub_libraries() -> None:
    """Progress bars for reading a few local files are noise in nodeflow's own progress output."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def checkpoint_fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    return file_identity(resolve_checkpoint(values["path"], env))


@node("LoadCheckpoint", category="loaders", fingerprint=checkpoint_fingerprint)
def load_checkpoint(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO,
    dtype: Dtype = "auto",
) -> CheckpointParts:
    """Load a Stable Diffusion model (a diffusers folder) from the models dir's checkpoints/."""
    folder = resolve_checkpoint(path, ctx.env)
    if not (folder / "model_index.json").exists():
        raise ValueError(
            f"{folder} is not a diffusers model folder (no model_index.json); "
            "single-file checkpoints are not supported yet"
        )
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("diffusers-sd", file_identity(folder), str(torch_dtype), str(ctx.device))
    return ctx.models.get(key, lambda: _load_diffusers_folder(folder, torch_dtype, ctx.device))


def _load_diffusers_folder(folder: Path, dtype: Any, device: Any) -> CheckpointParts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    quiet_hub_libraries()

    common = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=dtype, **common
    )
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **common)
    encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **common)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **common)
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for model in (unet, vae, encoder):
        model.to(device).eval().requires_grad_(False)
    vae_model = VAE(vae, source=str(folder))
    return CheckpointParts(
        unet=UNet(unet, scheduler_config, latent_scale=vae_model.scale_factor, source=str(folder)),
        text_encoder=TextEncoder(tokenizer, encoder, source=str(folder)),
        vae=vae_model,
    )
