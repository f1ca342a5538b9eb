"""Loading Stable Diffusion models from the models dir, offline, once per process.

Every loader takes a diffusers folder or a single weights file (original CompVis/SGM layout or
diffusers layout, told apart by its keys; see ``nodes.single_file``). Models are loaded on the CPU
and moved to the device by the model manager when a node uses them.

``path: "demo"`` names the built-in default model when the models dir has no model by that name,
so the example workflows run straight after install: a small SD 1.x-architecture model trained on
procedural scenes (``nodes/demo/``), shipped as package data. ``"demo.safetensors"`` is the same
model as one original-layout file. The other built-in names (``demo-sdxl``, the unCLIP demos) are
tiny random models of their architectures, made on first use in nodeflow's home folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from nodeflow import Context, Environment, Widget, node
from nodeflow.runtime.models import file_identity
from nodes import hf
from nodes.clip_vocab import EOS_TOKEN, clip_tokenizer
from nodes.families.lcm import conditioned_unet_family
from nodes.paths import contained, nodeflow_home
from nodes.single_file import (
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointFile,
    build_text_encoder,
    build_unet,
    build_vae,
    detect,
    family_config,
    hf_text_state,
    load_checkpoint_file,
    openclip_text_state,
    stored_architecture,
    unet_family,
    unet_scheduler_config,
)
from nodes.types import VAE, TextEncoder, UNet

DEMO = "demo"
DEMO_SDXL = "demo-sdxl"
DEMO_KANDINSKY_PRIOR = "demo-kandinsky-prior"
DEMO_KANDINSKY_DECODER = "demo-kandinsky-decoder"
DEMO_CLIP_VISION = "demo-clip-vision"
DEMO_STABLE_UNCLIP = "demo-stable-unclip"
DEMO_X4_UPSCALER = "demo-x4-upscaler"
DEMO_LCM = "demo-lcm-tiny"
DEMO_DDPM = "demo-ddpm"
DEMO_CONSISTENCY = "demo-consistency"
DEMO_SD3 = "demo-sd3"
DEMO_FLUX = "demo-flux"
DEMO_FILE = "demo.safetensors"
DEMO_CLIP = "demo-clip"
DEMO_SD3_FILE = "demo-sd3.safetensors"
SHIPPED = Path(__file__).resolve().parent / "demo" / "model"
"""The trained demo model and its style LoRA, package data (``nodes/demo/model/README.md`` is
the model card)."""
BUILT_IN = {
    DEMO: SHIPPED / "demo-sd",
    DEMO_FILE: SHIPPED / "demo-sd.safetensors",
    DEMO_SD3: SHIPPED / "demo-sd3",
    DEMO_SD3_FILE: SHIPPED / "demo-sd3.safetensors",
}
"""Checkpoint names that resolve to shipped files when the models dir has none by that name."""
BUILT_IN[DEMO_CLIP] = SHIPPED / DEMO_CLIP  # a whole CLIP of the demo scenes (nodes.clip_model)
BUILT_IN["demo-clip-noised"] = SHIPPED / "demo-clip-noised"  # noise-aware (nodes.noised_clip)
DEMOS = {
    DEMO_SDXL: "tiny-sdxl-1",
    DEMO_KANDINSKY_PRIOR: "tiny-kandinsky-prior-1",
    DEMO_KANDINSKY_DECODER: "tiny-kandinsky-decoder-1",
    DEMO_CLIP_VISION: "tiny-kandinsky-prior-1",  # the prior's own image encoder: one CLIP space
    DEMO_STABLE_UNCLIP: "tiny-stable-unclip-1",
    DEMO_X4_UPSCALER: "tiny-x4-upscaler-1",
    DEMO_LCM: "tiny-lcm-1",
    DEMO_DDPM: "tiny-ddpm-1",
    DEMO_CONSISTENCY: "tiny-consistency-1",
    DEMO_FLUX: "tiny-flux-1",
}
"""Built-in model names and the folder (in nodeflow's home) each is made in; bump the folder name
when the factory's output changes, so an old copy is never used."""
TRAINED = "trained demo model"
RANDOM = "random tiny test model"
BUILT_IN_CHECKPOINTS = {
    DEMO: f"{TRAINED}: SD 1.x architecture, 64x64 shape scenes (diffusers folder, shipped)",
    DEMO_FILE: f"{TRAINED}, as one original-layout single file (shipped)",
    DEMO_SDXL: f"{RANDOM}: SDXL (made on first use; pictures are noise)",
    DEMO_KANDINSKY_PRIOR: f"{RANDOM}: Kandinsky 2.2 prior (made on first use)",
    DEMO_KANDINSKY_DECODER: f"{RANDOM}: Kandinsky 2.2 decoder (made on first use)",
    DEMO_CLIP_VISION: f"{RANDOM}: the Kandinsky prior's CLIP image encoder (made on first use)",
    DEMO_STABLE_UNCLIP: f"{RANDOM}: Stable unCLIP (made on first use)",
    DEMO_X4_UPSCALER: f"{RANDOM}: SD x4 upscaler (made on first use; it enlarges 4x)",
    DEMO_LCM: f"{RANDOM}: LCM-distilled SD 1.x, guidance embedding (made on first use)",
    DEMO_DDPM: f"{RANDOM}: pixel-space DDPM, 32x32, for LoadPixelModel (made on first use)",
    DEMO_CONSISTENCY: (
        f"{RANDOM}: pixel-space class-conditional consistency model, 32x32, for LoadPixelModel "
        "(made on first use)"
    ),
    DEMO_SD3: f"{TRAINED}: SD3 architecture (rectified-flow MM-DiT, no T5), 64x64 shape scenes "
    "(diffusers folder, shipped)",
    DEMO_SD3_FILE: f"{TRAINED} demo-sd3, as one original-layout single file (shipped)",
    DEMO_FLUX: f"{RANDOM}: Flux.1 dev (made on first use; pictures are noise)",
    DEMO_CLIP: f"{TRAINED}: a CLIP of the demo scenes, image and text towers, for LoadCLIP and"
    " LoadCLIPVision (transformers folder, shipped)",
    "demo-clip-noised": f"{TRAINED}: a noise-aware CLIP of the demo model's noisy latents, for "
    "CLIPGuidance without decoding (nodes.noised_clip, shipped)",
}
"""Every built-in checkpoint name and what it is, for listings and validation messages: whether
it is the trained demo model (its pictures show the prompt) or a random tiny test model (noise)."""
Dtype = Literal["auto", "fp32", "fp16", "bf16"]
CheckpointDtype = Literal["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"]
"""``fp8_e4m3fn``: linear weights stored in fp8, computed in the run's dtype (``nodes.fp8``)."""
FP8 = "fp8_e4m3fn"


def _stored_fp8(loaded: Any, *models: Any) -> Any:
    """``loaded`` with its models' linear weights stored as fp8 (``nodes.fp8.store_fp8``)."""
    from nodes.fp8 import store_fp8

    for model in models:
        store_fp8(model)
    return loaded


class CheckpointParts(NamedTuple):
    unet: UNet
    text_encoder: TextEncoder
    vae: VAE


def resolve_model(name: str, env: Environment, *kinds: str, what: str = "model") -> Path:
    """A model file or folder in one of the models dir's ``kinds`` folders, or an absolute path."""
    if not name:
        raise ValueError("no model path given")
    folders = [folder for kind in kinds for folder in env.model_dirs(kind)]
    for folder in folders:
        candidate = contained(folder, name)
        if candidate.exists():
            return candidate
    searched = " or ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"no {what} {name!r} (looked in {searched} and as a path)")


def resolve_checkpoint(name: str, env: Environment) -> Path:
    """A checkpoint: under checkpoints/ (or diffusers/), an absolute path, or the demo."""
    try:
        return resolve_model(name, env, *CHECKPOINT_DIRS, what="checkpoint")
    except FileNotFoundError:
        if name in BUILT_IN or name in DEMOS:
            return demo_model(name)
        raise


def demo_model(name: str = DEMO) -> Path:
    """A built-in model's folder: the shipped one for ``demo``; the tiny random ones made once
    (atomically) on first use."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    path = nodeflow_home() / "models" / DEMOS[name]
    if (path / "model_index.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".making-", dir=path.parent))
    _demo_maker(name)(staging)
    try:
        staging.rename(path)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _demo_maker(name: str) -> Callable[[Path], Path]:
    from nodes import tiny, tiny_flow, tiny_lcm, tiny_pixel, tiny_unclip, tiny_upscale

    return {
        DEMO_LCM: tiny_lcm.make_tiny_lcm,
        DEMO_DDPM: tiny_pixel.make_tiny_ddpm,
        DEMO_CONSISTENCY: tiny_pixel.make_tiny_consistency,
        DEMO_FLUX: tiny_flow.make_tiny_flux,
        DEMO_SDXL: tiny.make_tiny_sdxl,
        DEMO_KANDINSKY_PRIOR: tiny_unclip.make_tiny_kandinsky_prior,
        DEMO_KANDINSKY_DECODER: tiny_unclip.make_tiny_kandinsky_decoder,
        DEMO_CLIP_VISION: tiny_unclip.make_tiny_kandinsky_prior,
        DEMO_STABLE_UNCLIP: tiny_unclip.make_tiny_stable_unclip,
        DEMO_X4_UPSCALER: tiny_upscale.make_tiny_x4_upscaler,
    }[name]


DEMO_LORA = "demo-style"
DEMO_LCM_LORA = "demo-lcm"
BUILT_IN_LORAS = {
    DEMO_LORA: f"{TRAINED}'s style LoRA: outlined shapes (shipped)",
    DEMO_LCM_LORA: f"{TRAINED}'s LCM-LoRA: 4 steps of the lcm scheduler at guidance 1 (shipped)",
}


def demo_lora(name: str = DEMO_LORA) -> Path:
    """A built-in LoRA for the demo model, shipped in kohya layout: ``demo-style`` (outlined
    shapes) or ``demo-lcm`` (latent consistency distilled, ``nodes/demo/train_lcm.py``)."""
    if name not in BUILT_IN_LORAS:
        raise ValueError(f"{name!r} is not a built-in LoRA ({', '.join(BUILT_IN_LORAS)})")
    return SHIPPED / f"{name}.safetensors"


def quiet_hub_libraries() -> None:
    """Progress bars for reading a few local files are noise in nodeflow's own progress output."""
    hf.diffusers().utils.logging.disable_progress_bar()
    hf.transformers().utils.logging.disable_progress_bar()


def _identity(kinds: tuple[str, ...], field: str = "path") -> Any:
    def fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
        name = values.get(field) or ""
        if not name:
            return None
        if kinds[0] == "checkpoints":
            return file_identity(resolve_checkpoint(name, env))
        return file_identity(resolve_model(name, env, *kinds))

    return fingerprint


CHECKPOINT_DIRS = ("checkpoints", "diffusers")
UNET_DIRS = ("unet", "diffusion_models", "checkpoints", "diffusers")
VAE_DIRS = ("vae", "checkpoints", "diffusers")
TEXT_DIRS = ("text_encoders", "clip", "checkpoints", "diffusers")
Prediction = Literal["auto", "epsilon", "v_prediction"]
FamilyChoice = Literal["auto", "sd1", "sd2", "sdxl", "sd3", "flux"]


@node(
    "LoadCheckpoint",
    category="loaders",
    fingerprint=_identity(CHECKPOINT_DIRS),
    aliases=("CheckpointLoaderSimple", "CheckpointLoader"),
)
def load_checkpoint(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO,
    dtype: CheckpointDtype = "auto",
    prediction: Prediction = "auto",
) -> CheckpointParts:
    """Load a Stable Diffusion 1.x, 2.x, XL, SD3/SD3.5 or Flux model: a diffusers folder or a
    single file.

    ``prediction`` overrides what the U-Net predicts when a file does not say (SD 2.x files
    default to v-prediction, as in diffusers). ``dtype: fp8_e4m3fn`` stores the denoiser's and
    text encoders' linear weights in fp8 (half of fp16's memory) and computes in the run's dtype.
    """
    location = resolve_checkpoint(path, ctx.env)
    fp8 = dtype == "fp8_e4m3fn"
    torch_dtype = ctx.runtime.dtype("auto" if fp8 else dtype)
    key = ("checkpoint", file_identity(location), str(torch_dtype), prediction, fp8)
    allow_pickle = ctx.env.allow_pickle

    def load() -> CheckpointParts:
        if location.is_dir():
            parts = _load_diffusers_folder(location, torch_dtype, prediction)
        else:
            parts = _load_single_file(location, torch_dtype, prediction, allow_pickle, fp8)
        if fp8:  # what was not read straight into fp8 is converted now
            from nodes.fp8 import store_fp8

            for model in (parts.unet.model, *parts.text_encoder.models):
                store_fp8(model)
        return parts

    return load_once(ctx, key, location.name, load)


T = TypeVar("T")


def load_once(ctx: Context, key: Any, name: str, load: Callable[[], T]) -> T:
    """``load()`` once per process (the model manager keeps it under ``key``); its models are
    registered with the manager under ``name``."""

    def load_and_register() -> T:
        loaded = load()
        handles = loaded if isinstance(loaded, CheckpointParts) else (loaded,)
        register(ctx, *handles, name=name)
        return loaded

    return ctx.models.get(key, load_and_register)


def register(ctx: Context, *handles: Any, name: str) -> None:
    """Tell the model manager about each model, by a name people recognise in its logs."""
    for handle in handles:
        what = {UNet: "U-Net", VAE: "VAE", TextEncoder: "text encoder"}[type(handle)]
        models = handle.models if isinstance(handle, TextEncoder) else (handle.model,)
        for index, model in enumerate(models):
            suffix = f" {index + 1}" if len(models) > 1 else ""
            ctx.models.register(model, label=f"{what}{suffix} of {name}")


def _with_prediction(config: dict[str, Any], prediction: str) -> dict[str, Any]:
    return config if prediction == "auto" else config | {"prediction_type": prediction}


def _load_diffusers_folder(folder: Path, dtype: Any, prediction: str) -> CheckpointParts:
    """A Stable Diffusion (1.x, 2.x, XL), Stable unCLIP or Kandinsky 2.2 decoder folder.

    A Kandinsky decoder has a MoVQ (``movq/``) instead of a VAE and no text encoder (its text
    encoder output encodes nothing); Stable unCLIP's U-Net also gets its image-embedding noiser.
    """
    UNet2DConditionModel = hf.diffusers().UNet2DConditionModel

    if not (folder / "model_index.json").exists():
        raise ValueError(f"{folder} is not a diffusers model folder (no model_index.json)")
    pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if pipeline in ("DDPMPipeline", "DDIMPipeline", "ConsistencyModelPipeline"):
        raise ValueError(
            f"{folder.name} is a pixel-space model ({pipeline}): load it with LoadPixelModel"
        )
    from nodes.flow_loaders import is_transformer_folder, load_transformer_folder

    if is_transformer_folder(folder):  # SD3 / SD3.5 / Flux: a transformer, not a U-Net
        if prediction != "auto":
            raise ValueError("prediction: rectified-flow models predict velocity; leave it auto")
        return CheckpointParts(*load_transformer_folder(folder, dtype))
    quiet_hub_libraries()
    unet = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=dtype, local_files_only=True
    )
    vae = _autoencoder_folder(_autoencoder_subfolder(folder), dtype)
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if (folder / "text_encoder").is_dir():
        text_encoder = _text_encoder_folders(folder, dtype)
    else:
        text_encoder = TextEncoder(None, None, source=str(folder))
    for model in (unet, vae, *text_encoder.models):
        model.eval().requires_grad_(False)
    vae_model = VAE(vae, source=str(folder))
    return CheckpointParts(
        unet=UNet(
            unet,
            _with_prediction(scheduler_config, prediction),
            latent_scale=vae_model.scale_factor,
            source=str(folder),
            noise_augmentor=noise_augmentor(folder, dtype),
            family=_family_of(folder, unet),
        ),
        text_encoder=text_encoder,
        vae=vae_model,
    )


def _family_of(folder: Path, unet: Any) -> Any:
    """The U-Net's family adapter: the folder says whether it is the x4 upscaler, the model's
    config whether it takes a guidance embedding (LCM)."""
    from nodes.families.upscale import folder_family

    return folder_family(folder) or conditioned_unet_family(unet)


def _autoencoder_subfolder(folder: Path) -> Path:
    return folder / "movq" if (folder / "movq").is_dir() else folder / "vae"


def _autoencoder_folder(folder: Path, dtype: Any) -> Any:
    """A KL autoencoder or a VQ one (Kandinsky's MoVQ), by the class its config names."""
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    cls = getattr(hf.diffusers(), "VQModel" if name == "VQModel" else "AutoencoderKL")
    model = cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    return model.eval().requires_grad_(False)


def noise_augmentor(folder: Path, dtype: Any) -> Any:
    """Stable unCLIP's image-embedding noiser (normaliser and noise schedule), if ``folder`` is a
    Stable unCLIP model folder; else ``None``."""
    if not (folder / "image_normalizer").is_dir():
        return None
    DDPMScheduler = hf.diffusers().DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    from nodes.unclip import NoiseAugmentor

    normalizer = StableUnCLIPImageNormalizer.from_pretrained(
        folder, subfolder="image_normalizer", torch_dtype=dtype, local_files_only=True
    )
    config = json.loads((folder / "image_noising_scheduler" / "scheduler_config.json").read_text())
    scheduler = DDPMScheduler.from_config(config)
    return NoiseAugmentor(normalizer.eval().requires_grad_(False), scheduler)


def _text_encoder_folders(folder: Path, dtype: Any) -> TextEncoder:
    """The text encoder(s) of a diffusers model folder, with their tokenizers."""
    encoder = _text_encoder_folder(folder / "text_encoder", dtype)
    tokenizer = _tokenizer_beside(folder / "text_encoder", "tokenizer", second=False)
    if not (folder / "text_encoder_2").is_dir():
        return TextEncoder(tokenizer, encoder, source=str(folder))
    return TextEncoder(
        tokenizer,
        encoder,
        tokenizer_2=_tokenizer_beside(folder / "text_encoder_2", "tokenizer_2", second=True),
        model_2=_text_encoder_folder(folder / "text_encoder_2", dtype),
        source=str(folder),
    )


def _text_encoder_folder(folder: Path, dtype: Any) -> Any:
    config = json.loads((folder / "config.json").read_text())
    name = (config.get("architectures") or ["CLIPTextModel"])[0]
    if name not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise ValueError(f"{folder}: text encoder {name} is not a CLIP text model")
    cls = getattr(hf.transformers(), name)
    model = cls.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.eval().requires_grad_(False)


def has_tokenizer(folder: Path) -> bool:
    """A tokenizer folder as released (``vocab.json``) or as transformers 5 saves one."""
    return (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()


def _tokenizer_beside(encoder_folder: Path, name: str, *, second: bool) -> Any:
    """The tokenizer folder next to a text encoder folder, else the shipped CLIP tokenizer."""
    folder = encoder_folder.parent / name
    if has_tokenizer(folder):
        return hf.transformers().CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    return clip_tokenizer("!" if second else EOS_TOKEN)


def _load_single_file(
    path: Path, dtype: Any, prediction: str, allow_pickle: bool, fp8: bool = False
) -> CheckpointParts:
    from nodes.sd3_single_file import is_sd3_file, load_sd3_file

    if is_sd3_file(CheckpointFile(path, allow_pickle=allow_pickle).keys):
        unet, text_encoder, vae = load_sd3_file(path, dtype, allow_pickle, fp8)
        if vae is None:
            raise ValueError(f"{path.name} has no VAE; load the transformer with LoadUNet")
        return CheckpointParts(unet, text_encoder, vae)
    loaded = load_checkpoint_file(path, dtype, allow_pickle=allow_pickle, prediction=prediction)
    vae = VAE(loaded.vae, source=str(path))
    encoders, tokenizers = loaded.text_encoders, loaded.tokenizers
    text_encoder = TextEncoder(
        tokenizers[0],
        encoders[0],
        tokenizer_2=tokenizers[1] if len(encoders) > 1 else None,
        model_2=encoders[1] if len(encoders) > 1 else None,
        source=str(path),
    )
    unet = UNet(
        loaded.unet,
        loaded.scheduler_config,
        latent_scale=vae.scale_factor,
        source=str(path),
        family=conditioned_unet_family(loaded.unet),
    )
    return CheckpointParts(unet=unet, text_encoder=text_encoder, vae=vae)


# ----- component loaders ------------------------------------------------------------------------


def _component_folder(location: Path, subfolder: str) -> Path | None:
    """A diffusers component folder: the folder itself, or its ``subfolder`` in a model folder."""
    if (location / "config.json").is_file():
        return location
    if (location / subfolder / "config.json").is_file():
        return location / subfolder
    return None


@node("LoadUNet", category="loaders", fingerprint=_identity(UNET_DIRS), aliases=("UNETLoader",))
def load_unet(
    ctx: Context,
    path: Annotated[str, Widget(files="unet")],
    dtype: CheckpointDtype = "auto",
    prediction: Prediction = "auto",
) -> UNet:
    """Load a U-Net on its own: a diffusers folder, or a file in original or diffusers layout;
    also an SD3 MMDiT, or a Flux transformer in Black Forest Labs' layout (``flux1-dev``).

    The latent scale and default scheduler come from the model folder it sits in, if any, else
    from the detected family (every real SD VAE downsamples by 8). ``dtype: fp8_e4m3fn`` stores
    the linear weights in fp8 and computes in the run's dtype (ComfyUI's ``weight_dtype``); they
    are converted after loading.
    """
    location = resolve_model(path, ctx.env, *UNET_DIRS)
    fp8 = dtype == FP8
    torch_dtype = ctx.runtime.dtype("auto" if fp8 else dtype)
    key = ("unet", file_identity(location), str(torch_dtype), prediction, fp8)
    allow_pickle = ctx.env.allow_pickle

    def load() -> UNet:
        unet = _load_unet(location, torch_dtype, prediction, allow_pickle)
        return _stored_fp8(unet, unet.model) if fp8 else unet

    return ctx.models.get(key, load)


def _load_unet(location: Path, dtype: Any, prediction: str, allow_pickle: bool) -> UNet:
    from nodes.flux_single_file import is_flux_file, load_flux_transformer
    from nodes.ldm_layout import unet_to_diffusers

    UNet2DConditionModel = hf.diffusers().UNet2DConditionModel

    folder = _component_folder(location, "unet")
    if folder is not None:
        quiet_hub_libraries()
        model = UNet2DConditionModel.from_pretrained(
            folder, torch_dtype=dtype, local_files_only=True
        )
        model.eval().requires_grad_(False)
        family = unet_family(model.state_dict().keys(), lambda k: model.state_dict()[k].shape, "")
        scheduler_file = folder.parent / "scheduler" / "scheduler_config.json"
        vae_file = _autoencoder_subfolder(folder.parent) / "config.json"
        scheduler = (
            json.loads(scheduler_file.read_text())
            if scheduler_file.is_file()
            else family_config(family, "scheduler")
        )
        scale = (
            2 ** (len(json.loads(vae_file.read_text())["block_out_channels"]) - 1)
            if vae_file.is_file()
            else 8
        )
        return UNet(
            model,
            _with_prediction(scheduler, prediction),
            scale,
            source=str(location),
            noise_augmentor=noise_augmentor(folder.parent, dtype),
            family=conditioned_unet_family(model),
        )
    file = CheckpointFile(location, allow_pickle=allow_pickle)
    if is_flux_file(file.keys):
        return load_flux_transformer(location, dtype, allow_pickle)
    found = detect(file)
    if found.family == "sd3":
        from nodes.sd3_single_file import load_sd3_transformer

        return load_sd3_transformer(location, dtype, allow_pickle)
    if found.kind not in ("unet", "checkpoint") or found.family is None:
        raise ValueError(f"{location.name} holds no U-Net (it looks like {found.describe()})")
    if found.layout == "diffusers":
        state = file.read("", dtype)
    else:
        prefix = UNET_PREFIX if any(k.startswith(UNET_PREFIX) for k in file.keys) else ""
        state = unet_to_diffusers(file.read(prefix, dtype))
    stored = stored_architecture(file)
    model = build_unet(state, found.family, stored=stored.get("unet"))
    chosen = found.prediction_type if prediction == "auto" else prediction
    scheduler = unet_scheduler_config(found.family, chosen or "epsilon", found.zero_snr)
    vae_levels = len(stored["vae"]["block_out_channels"]) if "vae" in stored else 4
    return UNet(
        model,
        scheduler,
        latent_scale=2 ** (vae_levels - 1),
        source=str(location),
        family=conditioned_unet_family(model),
    )


@node("LoadVAE", category="loaders", fingerprint=_identity(VAE_DIRS), aliases=("VAELoader",))
def load_vae(
    ctx: Context,
    path: Annotated[str, Widget(files="vae")],
    dtype: Dtype = "auto",
    family: FamilyChoice = "auto",
) -> VAE:
    """Load a VAE: a diffusers folder, a VAE file (original or diffusers layout), or the VAE of a
    full checkpoint.

    SD and SDXL VAEs have the same shapes but scale latents differently, which a VAE-only file
    does not record: ``auto`` takes SD's scaling unless the file is a full SDXL checkpoint; choose
    ``sdxl`` for an SDXL VAE file. Likewise a 16-channel VAE file is taken as Flux's ``ae``
    (BFL's standalone VAE); choose ``sd3`` for SD3's.
    """
    location = resolve_model(path, ctx.env, *VAE_DIRS)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("vae", file_identity(location), str(torch_dtype), family)
    allow_pickle = ctx.env.allow_pickle
    return load_once(
        ctx, key, location.name, lambda: _load_vae(location, torch_dtype, family, allow_pickle)
    )


def _load_vae(location: Path, dtype: Any, family: str, allow_pickle: bool) -> VAE:
    from nodes.ldm_layout import vae_to_diffusers

    folder = _component_folder(location, "vae") or _component_folder(location, "movq")
    if folder is not None:
        quiet_hub_libraries()
        model = _autoencoder_folder(folder, dtype)
        if family != "auto" and not hasattr(model, "quantize"):
            real = family_config(family, "vae")  # scaling and, for SD3/Flux, shift
            model.register_to_config(
                scaling_factor=real["scaling_factor"], shift_factor=real.get("shift_factor")
            )
        return VAE(model.eval().requires_grad_(False), source=str(location))
    file = CheckpointFile(location, allow_pickle=allow_pickle)
    found = detect(file)
    if found.kind == "checkpoint":
        state = vae_to_diffusers(file.read(VAE_PREFIX, dtype))
    elif found.kind == "vae" and found.layout == "diffusers":
        state = file.read("", dtype)
    elif found.kind == "vae":
        prefix = VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in file.keys) else ""
        state = vae_to_diffusers(file.read(prefix, dtype))
    else:
        raise ValueError(f"{location.name} holds no VAE (it looks like {found.describe()})")
    if family != "auto":
        chosen = family
    elif found.family is not None:
        chosen = found.family
    else:  # a 16-channel VAE on its own is BFL's ``ae`` (SD3's ships inside its checkpoints)
        chosen = "flux" if int(state["decoder.conv_in.weight"].shape[1]) == 16 else "sd1"
    stored = dict(stored_architecture(file).get("vae", {}))
    if family != "auto":  # the family asked for decides the latent scaling
        stored.pop("scaling_factor", None)
    model = build_vae(state, chosen, stored=stored)  # type: ignore[arg-type]
    return VAE(model, source=str(location))


@node(
    "LoadTextEncoder",
    category="loaders",
    fingerprint=_identity(TEXT_DIRS),
    aliases=("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader"),
)
def load_text_encoder(
    ctx: Context,
    path: Annotated[str, Widget(files="text_encoders")],
    path_2: Annotated[str, Widget(files="text_encoders")] = "",
    path_3: Annotated[str, Widget(files="text_encoders")] = "",
    dtype: CheckpointDtype = "auto",
) -> TextEncoder:
    """Load a CLIP text encoder, or SDXL's pair (``path``: CLIP ViT-L, ``path_2``: OpenCLIP
    bigG), or Flux's (CLIP-L and T5-XXL, in either order: ComfyUI's DualCLIPLoader with
    ``clip_l`` and ``t5xxl``), or SD3's three (``path``: CLIP-L, ``path_2``: CLIP-G,
    ``path_3``: T5-XXL: ComfyUI's TripleCLIPLoader), from diffusers folders or single files
    (transformers or OpenCLIP layout).

    A file has no tokenizer or activation recorded: the shipped CLIP tokenizer is used, and
    OpenCLIP models (OpenCLIP layout, or 1024/1280 wide) use GELU where CLIP ViT-L uses
    quick-GELU. An OpenCLIP-layout file on its own is taken as SD 2.x's (its last layer unused).
    """
    first = resolve_model(path, ctx.env, *TEXT_DIRS)
    second = resolve_model(path_2, ctx.env, *TEXT_DIRS) if path_2 else None
    third = resolve_model(path_3, ctx.env, *TEXT_DIRS) if path_3 else None
    if third is not None and second is None:
        raise ValueError(
            "path_3 (SD3's T5-XXL) needs path_2 (CLIP-G) too: SD3 takes CLIP-L, CLIP-G and T5"
        )
    fp8 = dtype == FP8
    torch_dtype = ctx.runtime.dtype("auto" if fp8 else dtype)
    identities = tuple(p and file_identity(p) for p in (first, second, third))
    key = ("text_encoder", identities, str(torch_dtype), fp8)
    allow_pickle = ctx.env.allow_pickle

    def load() -> TextEncoder:
        if third is not None and second is not None:
            encoders = _load_sd3_text_encoders(first, second, third, torch_dtype, allow_pickle)
        else:
            encoders = _load_text_encoders(first, second, torch_dtype, allow_pickle)
        return _stored_fp8(encoders, *encoders.models) if fp8 else encoders

    return load_once(ctx, key, first.name, load)


def _is_t5(location: Path, allow_pickle: bool) -> bool:
    """A T5 encoder: a transformers folder of model type ``t5``, or a file in transformers'
    names (``shared.weight``, ``encoder.block.N...``, as ComfyUI's ``t5xxl_fp16``)."""
    if location.is_dir():
        config = location / "config.json"
        return config.is_file() and json.loads(config.read_text()).get("model_type") == "t5"
    keys = CheckpointFile(location, allow_pickle=allow_pickle).keys
    return "shared.weight" in keys and any(key.startswith("encoder.block.") for key in keys)


def _load_t5(location: Path, dtype: Any, allow_pickle: bool) -> Any:
    """A T5 encoder from a folder or a file; a file's sizes come from its shapes, and what they
    cannot tell (attention distance) from the T5-XXL config or its ``text_encoder_3`` metadata."""
    from nodes.sd3_single_file import build_t5

    if location.is_dir():
        cls = hf.transformers().T5EncoderModel
        model = cls.from_pretrained(location, dtype=dtype, local_files_only=True)
        return model.eval().requires_grad_(False)
    file = CheckpointFile(location, allow_pickle=allow_pickle)
    try:
        model = build_t5(file.read("", dtype), stored_architecture(file).get("text_encoder_3"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{location.name}: not a T5 encoder nodeflow reads ({exc})") from exc
    return model.eval().requires_grad_(False)


def _load_flux_text_encoders(clip: Path, t5: Path, dtype: Any, allow_pickle: bool) -> TextEncoder:
    """Flux's pair from two files or folders: CLIP-L (pooled prompt) and T5 (token sequence)."""
    from nodes.flow_text import FluxPrompt
    from nodes.t5 import t5_tokenizer

    model, tokenizer = _load_one_text_encoder(
        clip, dtype, second=False, pair=True, allow_pickle=allow_pickle
    )
    return TextEncoder(
        tokenizer,
        model,
        tokenizer_3=t5_tokenizer(),
        model_3=_load_t5(t5, dtype, allow_pickle),
        prompt_format=FluxPrompt(),
        source=f"{clip} + {t5}",
    )


def _load_sd3_text_encoders(
    clip_l: Path, clip_g: Path, t5: Path, dtype: Any, allow_pickle: bool
) -> TextEncoder:
    """SD3's three encoders; only the third may be T5, so a swapped order is named, not loaded
    as something else."""
    from nodes.sd3_single_file import load_sd3_text_encoders

    for location, name in ((clip_l, "path"), (clip_g, "path_2")):
        if _is_t5(location, allow_pickle):
            raise ValueError(
                f"{name} {location.name} is a T5 encoder; SD3's order is path: CLIP-L, "
                "path_2: CLIP-G, path_3: T5-XXL"
            )
    if not _is_t5(t5, allow_pickle):
        raise ValueError(f"path_3 {t5.name} is not a T5 encoder; SD3's third encoder is T5-XXL")
    return load_sd3_text_encoders(clip_l, clip_g, t5, dtype, allow_pickle)


def _load_text_encoders(
    first: Path, second: Path | None, dtype: Any, allow_pickle: bool
) -> TextEncoder:
    if second is not None:
        t5_first, t5_second = _is_t5(first, allow_pickle), _is_t5(second, allow_pickle)
        if t5_first and t5_second:
            raise ValueError(
                f"{first.name} and {second.name} are both T5 encoders; Flux takes CLIP-L and T5"
            )
        if t5_first or t5_second:
            clip, t5 = (second, first) if t5_first else (first, second)
            return _load_flux_text_encoders(clip, t5, dtype, allow_pickle)
    model, tokenizer = _load_one_text_encoder(
        first, dtype, second=False, pair=second is not None, allow_pickle=allow_pickle
    )
    if second is None:
        return TextEncoder(tokenizer, model, source=str(first))
    model_2, tokenizer_2 = _load_one_text_encoder(
        second, dtype, second=True, pair=True, allow_pickle=allow_pickle
    )
    return TextEncoder(
        tokenizer, model, tokenizer_2=tokenizer_2, model_2=model_2, source=f"{first} + {second}"
    )


def _load_one_text_encoder(
    location: Path, dtype: Any, *, second: bool, pair: bool, allow_pickle: bool = False
) -> tuple[Any, Any]:
    subfolder = "text_encoder_2" if second else "text_encoder"
    folder = _component_folder(location, subfolder)
    if folder is not None:
        model = _text_encoder_folder(folder, dtype)
        tokenizer = _tokenizer_beside(
            folder, "tokenizer_2" if second else "tokenizer", second=second
        )
        return model, tokenizer
    file = CheckpointFile(location, allow_pickle=allow_pickle)
    found = detect(file)
    if found.kind != "text_encoder":
        raise ValueError(f"{location.name} is no text encoder (it looks like {found.describe()})")
    if found.layout == "openclip":
        state = openclip_text_state(file.read("", dtype), drop_last_layer=not pair)
        openclip = True
    else:
        state = hf_text_state(file.read("", dtype))
        width = int(state["text_model.embeddings.token_embedding.weight"].shape[1])
        openclip = second or width in (1024, 1280)
    base = family_config(
        "sdxl" if second else ("sd2" if openclip else "sd1"),
        "text_encoder_2" if second else "text_encoder",
    )
    # a trained encoder's file (TrainUNet) says what its shapes cannot: heads, activation
    stored = stored_architecture(file).get("text_encoder_2" if second else "text_encoder")
    model = build_text_encoder(state, base, projection=second, stored=stored)
    return model, clip_tokenizer("!" if openclip else EOS_TOKEN)
