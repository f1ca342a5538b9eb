"""Flux as separate files in Black Forest Labs' layout (``flux1-dev.safetensors`` read by LoadUNet,
as ComfyUI's UNETLoader): the key mapping against diffusers' converter, and a tiny Flux folder
written out as files giving the folder's pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flowgraphs import nodeflow_image
from pixels import assert_same_pixels

from nodes.flux_layout import flux_config, flux_part_sizes, flux_to_diffusers, flux_to_original

RUN = {"prompt": "a red circle on a blue background", "seed": 4, "steps": 3}


@pytest.fixture(scope="module")
def flux_files(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_flux
    from nodes.tiny_flow_single import (
        write_flux_ae_file,
        write_flux_text_encoder_files,
        write_flux_transformer_file,
    )

    folder = models_dir / "checkpoints" / "tiny-flux"
    if not (folder / "model_index.json").exists():
        make_tiny_flux(folder, seed=0)
    write_flux_transformer_file(folder, models_dir / "unet" / "tiny-flux-bfl.safetensors")
    write_flux_ae_file(folder, models_dir / "vae" / "tiny-flux-ae.safetensors")
    text = models_dir / "text_encoders"
    write_flux_text_encoder_files(
        folder, text / "tiny-clip-l.safetensors", text / "tiny-t5xxl.safetensors"
    )
    return models_dir


def test_the_bfl_layout_is_the_one_diffusers_converts():
    """diffusers' converter hard-codes Flux.1's width (3072), so the check runs at that width on
    the meta device: keys and shapes only (the pictures below check the values). Both directions
    of our table agree with diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
    )

    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=2, num_single_layers=2, guidance_embeds=True)
    ours = model.state_dict()
    original = flux_to_original(ours)
    assert "double_blocks.1.img_attn.qkv.weight" in original
    assert "single_blocks.1.linear1.bias" in original
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    config = flux_config(original)
    back = flux_to_diffusers(original, flux_part_sizes(config, config["num_single_layers"]))
    assert set(theirs) == set(back) == set(ours)
    for key, value in ours.items():
        assert theirs[key].shape == back[key].shape == value.shape, key
    for name in ("num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads"):
        assert config[name] == model.config[name], name


def test_the_round_trip_keeps_every_tensor(flux_files):
    from safetensors.torch import load_file

    folder = flux_files / "checkpoints" / "tiny-flux" / "transformer"
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    original = flux_to_original(state)
    config = flux_config(original)
    back = flux_to_diffusers(original, flux_part_sizes(config, config["num_single_layers"]))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def _files_graph(
    unet: str,
    checkpoint: str,
    *,
    seed: int,
    steps: int,
    prompt: str,
    vae: str | None = None,
    text: tuple[str, str] | None = None,
    dtype: str = "auto",
) -> object:
    """Flux txt2img with the transformer from ``unet`` and, where given, the VAE and the
    text encoders from their own files (both loaded as ``dtype``); the rest from the
    ``checkpoint`` folder."""
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    loaded = b.add("LoadCheckpoint", id="model", path=checkpoint)
    decoder = b.add("LoadVAE", id="vae", path=vae) if vae else loaded
    encoders = (
        b.add("LoadTextEncoder", id="text", path=text[0], path_2=text[1], dtype=dtype)
        if text
        else loaded
    )
    transformer = b.add("LoadUNet", id="unet", path=unet, dtype=dtype)
    encode = {"text_encoder": encoders.text_encoder}
    pos = b.add("TextEncode", id="pos", text=prompt, **encode)
    neg = b.add("TextEncode", id="neg", text="", **encode)
    pos = b.add("FluxGuidance", id="fg", conditioning=pos.conditioning, guidance=3.5)
    sched = b.add("Scheduler", id="sched", unet=transformer.unet, name="euler", steps=steps)
    cfg = b.add(
        "CFG", id="cfg", unet=transformer.unet, positive=pos.conditioning,
        negative=neg.conditioning, scale=1.0,
    )  # fmt: skip
    latent = b.add("EmptyLatent", id="empty", width=64, height=64, batch_size=1)
    den = b.add(
        "Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
        latent=latent.latent, seed=seed,
    )  # fmt: skip
    b.add("VAEDecode", id="decode", vae=decoder.vae, latent=den.latent)
    return b.build()


def test_load_unet_reads_a_bfl_flux_file_to_the_folders_pictures(flux_files, make_executor):
    """The transformer read back from its BFL file gives the folder's pictures; the tolerance
    is the float one of ``pixels`` (same weights, same modules: only summation order differs)."""
    graph = _files_graph("tiny-flux-bfl.safetensors", "tiny-flux", **RUN)
    result = make_executor().run(graph, targets=["decode", "unet"])
    assert result.ok, result.error and result.error.traceback
    unet = result.values["unet"]["unet"]
    assert type(unet.model).__name__ == "FluxTransformer2DModel"
    assert unet.family.name == "flux" and unet.latent_scale == 2
    from_file = result.values["decode"]["image"].pixels.numpy()
    from_folder = nodeflow_image(make_executor, "tiny-flux", scale=1.0, guidance=3.5, **RUN)
    assert_same_pixels(from_file, from_folder)


def test_a_flux_file_with_unknown_keys_names_the_file(flux_files, make_executor):
    from safetensors.torch import load_file, save_file

    from nodeflow.builder import WorkflowBuilder

    source = flux_files / "unet" / "tiny-flux-bfl.safetensors"
    state = load_file(source)
    state["double_blocks.0.img_attn.extra.weight"] = torch.zeros(2, 2)
    save_file(state, flux_files / "unet" / "tiny-flux-odd.safetensors")
    b = WorkflowBuilder()
    b.add("LoadUNet", id="unet", path="tiny-flux-odd.safetensors")
    result = make_executor().run(b.build(), targets=["unet"])
    assert not result.ok
    message = str(result.error)
    assert "tiny-flux-odd.safetensors" in message and "img_attn.extra.weight" in message


def test_load_vae_reads_the_ae_file_to_the_folders_pictures(flux_files, make_executor):
    """BFL's ``ae`` (LDM names, no quant convs, no metadata) takes Flux's latent scaling and
    shift on its own, and decodes as the folder's VAE."""
    graph = _files_graph(
        "tiny-flux-bfl.safetensors", "tiny-flux", vae="tiny-flux-ae.safetensors", **RUN
    )
    result = make_executor().run(graph, targets=["decode", "vae"])
    assert result.ok, result.error and result.error.traceback
    config = result.values["vae"]["vae"].model.config
    assert (config.scaling_factor, config.shift_factor) == (0.3611, 0.1159)
    from_files = result.values["decode"]["image"].pixels.numpy()
    from_folder = nodeflow_image(make_executor, "tiny-flux", scale=1.0, guidance=3.5, **RUN)
    assert_same_pixels(from_files, from_folder)


def test_load_vae_takes_sd3_scaling_when_asked(flux_files, make_executor):
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    b.add("LoadVAE", id="vae", path="tiny-flux-ae.safetensors", family="sd3")
    result = make_executor().run(b.build(), targets=["vae"])
    assert result.ok, result.error and result.error.traceback
    config = result.values["vae"]["vae"].model.config
    assert (config.scaling_factor, config.shift_factor) == (1.5305, 0.0609)


@pytest.mark.parametrize(
    "text",
    [
        ("tiny-clip-l.safetensors", "tiny-t5xxl.safetensors"),
        ("tiny-t5xxl.safetensors", "tiny-clip-l.safetensors"),
    ],
)
def test_flux_as_four_files_gives_the_folders_pictures(flux_files, make_executor, text):
    """Transformer (LoadUNet), CLIP-L + T5 (LoadTextEncoder, either order, as DualCLIPLoader
    takes them) and ae (LoadVAE), each from its own file: the folder's pictures."""
    graph = _files_graph(
        "tiny-flux-bfl.safetensors", "tiny-flux", vae="tiny-flux-ae.safetensors", text=text, **RUN
    )
    result = make_executor().run(graph, targets=["decode", "text"])
    assert result.ok, result.error and result.error.traceback
    encoders = result.values["text"]["text_encoder"]
    assert type(encoders.model).__name__ == "CLIPTextModel"
    assert type(encoders.model_3).__name__ == "T5EncoderModel"
    from_files = result.values["decode"]["image"].pixels.numpy()
    from_folder = nodeflow_image(make_executor, "tiny-flux", scale=1.0, guidance=3.5, **RUN)
    assert_same_pixels(from_files, from_folder)


def test_two_t5_files_are_refused_by_name(flux_files, make_executor):
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    b.add(
        "LoadTextEncoder", id="text", path="tiny-t5xxl.safetensors",
        path_2="tiny-t5xxl.safetensors",
    )  # fmt: skip
    result = make_executor().run(b.build(), targets=["text"])
    assert not result.ok
    assert "tiny-t5xxl.safetensors and tiny-t5xxl.safetensors are both T5" in str(result.error)


def test_a_prefixed_bfl_file_loads_as_the_bare_one(flux_files, make_executor):
    """Transformers saved from ComfyUI keep ``model.diffusion_model.`` before the BFL names."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from nodeflow.builder import WorkflowBuilder

    source = flux_files / "unet" / "tiny-flux-bfl.safetensors"
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    state = {"model.diffusion_model." + k: v for k, v in load_file(source).items()}
    save_file(state, flux_files / "unet" / "tiny-flux-prefixed.safetensors", metadata=metadata)
    b = WorkflowBuilder()
    b.add("LoadUNet", id="bare", path="tiny-flux-bfl.safetensors")
    b.add("LoadUNet", id="prefixed", path="tiny-flux-prefixed.safetensors")
    result = make_executor().run(b.build(), targets=["bare", "prefixed"])
    assert result.ok, result.error and result.error.traceback
    bare = result.values["bare"]["unet"].model.state_dict()
    prefixed = result.values["prefixed"]["unet"].model.state_dict()
    assert set(bare) == set(prefixed)
    for key, value in bare.items():
        assert torch.equal(prefixed[key], value), key


def test_a_schnell_file_gets_schnells_fixed_shift(flux_files, make_executor):
    """No ``guidance_in``: timestep-distilled schnell, whose scheduler has shift 1 and no dynamic
    shifting (FLUX.1-schnell's scheduler config; ComfyUI's ``FluxSchnell``), not dev's."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from nodeflow.builder import WorkflowBuilder
    from nodes.single_file import ARCHITECTURE_KEY

    source = flux_files / "unet" / "tiny-flux-bfl.safetensors"
    with safe_open(str(source), framework="pt") as f:
        architecture = json.loads(f.metadata()[ARCHITECTURE_KEY])
    architecture["unet"]["guidance_embeds"] = False
    state = {k: v for k, v in load_file(source).items() if not k.startswith("guidance_in.")}
    metadata = {"format": "pt", ARCHITECTURE_KEY: json.dumps(architecture)}
    save_file(state, flux_files / "unet" / "tiny-schnell.safetensors", metadata=metadata)
    b = WorkflowBuilder()
    b.add("LoadUNet", id="schnell", path="tiny-schnell.safetensors")
    b.add("LoadUNet", id="dev", path="tiny-flux-bfl.safetensors")
    result = make_executor().run(b.build(), targets=["schnell", "dev"])
    assert result.ok, result.error and result.error.traceback
    schnell, dev = result.values["schnell"]["unet"], result.values["dev"]["unet"]
    assert not schnell.model.config.guidance_embeds
    assert schnell.scheduler_config["shift"] == 1.0
    assert schnell.scheduler_config["use_dynamic_shifting"] is False
    assert dev.scheduler_config["use_dynamic_shifting"] is True


def test_fp8_files_give_diffusers_pictures_with_fp8_rounded_weights(flux_files, make_executor):
    """``dtype: fp8_e4m3fn`` on LoadUNet and LoadTextEncoder (ComfyUI's fp8 Flux and T5
    weights): every linear weight stored in one byte, and the pictures of FluxPipeline whose
    linear weights were rounded to fp8 and back."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from flowgraphs import diffusers_image

    from nodes.fp8 import stored_fp8_bytes

    text = ("tiny-clip-l.safetensors", "tiny-t5xxl.safetensors")
    graph = _files_graph(
        "tiny-flux-bfl.safetensors", "tiny-flux", text=text, dtype="fp8_e4m3fn", **RUN
    )
    result = make_executor().run(graph, targets=["decode", "unet", "text"])
    assert result.ok, result.error and result.error.traceback
    unet = result.values["unet"]["unet"].model
    encoders = result.values["text"]["text_encoder"].models
    for model in (unet, *encoders):
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert stored_fp8_bytes(model) == linear > 0, type(model).__name__
    actual = result.values["decode"]["image"].pixels.numpy()

    folder = flux_files / "checkpoints" / "tiny-flux"
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    with torch.no_grad():
        for part in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2):
            for module in part.modules():
                if isinstance(module, torch.nn.Linear):
                    weight = module.weight
                    weight.copy_(weight.to(torch.float8_e4m3fn).to(weight.dtype))
    expected = diffusers_image(
        pipe, seed=RUN["seed"], prompt=RUN["prompt"], num_inference_steps=RUN["steps"],
        guidance_scale=3.5, width=64, height=64, max_sequence_length=512,
    )  # fmt: skip
    assert_same_pixels(actual, expected)
    full = nodeflow_image(make_executor, "tiny-flux", scale=1.0, guidance=3.5, **RUN)
    assert abs(full - actual).max() > 1e-3, "fp8 rounding must show (else nothing was stored)"
