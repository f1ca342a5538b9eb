"""Single-file checkpoints: detection, configs from shapes, pixels equal to the source folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pixels import assert_same_pixels
from safetensors.torch import load_file, save_file
from sdgraphs import sd_graph

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodes.ldm_layout import hf_to_openclip, unet_to_ldm, vae_to_ldm
from nodes.single_file import (
    ARCHITECTURE_KEY,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointFile,
    PickleRefused,
    detect,
    family_config,
    load_checkpoint_file,
    stored_architecture,
    text_config,
    unet_config,
    vae_config,
)


def image_of(make_executor, **settings) -> np.ndarray:
    settings.setdefault("steps", 3)
    result = make_executor().run(sd_graph(save=False, **settings), targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


@pytest.mark.parametrize("name", ["tiny", "tiny-sd2", "tiny-sdxl"])
def test_single_file_gives_the_pixels_of_the_folder_it_was_made_from(make_executor, name):
    folder = image_of(make_executor, checkpoint=name, prompt="a red circle", negative="blue")
    single = image_of(
        make_executor, checkpoint=f"{name}.safetensors", prompt="a red circle", negative="blue"
    )
    assert folder.shape == (1, 64, 64, 3)
    assert_same_pixels(single, folder)


@pytest.mark.parametrize(
    "name, description",
    [
        ("tiny.safetensors", "SD 1.x checkpoint [ldm layout]"),
        ("tiny-sd2.safetensors", "SD 2.x checkpoint, v-prediction [ldm layout]"),
        ("tiny-sdxl.safetensors", "SDXL checkpoint [ldm layout]"),
    ],
)
def test_detects_family_and_prediction(models_dir: Path, name: str, description: str) -> None:
    assert detect(CheckpointFile(models_dir / "checkpoints" / name)).describe() == description


# ----- the shipped configs are what the derivation rules give for the real models -------------


class MetaFile:
    """A CheckpointFile stand-in over meta tensors: real-size key layouts without the bytes."""

    def __init__(self, state: dict[str, Any], path: Path = Path("model.safetensors")) -> None:
        self.state, self.keys, self.metadata, self.path = state, list(state), {}, path

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.state[key].shape)


def _meta_models(family: str) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel.from_config(family_config(family, "unet")),
            "vae": AutoencoderKL.from_config(family_config(family, "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**family_config(family, "text_encoder"))),
        }
        if family == "sdxl":
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig(**family_config(family, "text_encoder_2"))
            )
    return models


def _hf_state(model: Any) -> dict[str, Any]:
    return {
        (k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}"): v
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_configs_derived_from_real_shapes_are_the_real_configs(family: str) -> None:
    models = _meta_models(family)
    pooled = 1280 if family == "sdxl" else None
    derived = unet_config(models["unet"].state_dict(), family, pooled)  # type: ignore[arg-type]
    real = dict(models["unet"].config)
    for key in (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "cross_attention_dim",
        "use_linear_projection",
        "in_channels",
        "out_channels",
    ):
        assert list(np.atleast_1d(derived[key])) == list(np.atleast_1d(real[key])), key
    assert (
        np.atleast_1d(derived["attention_head_dim"]).tolist()
        == np.atleast_1d(real["attention_head_dim"]).tolist()
    )
    if family == "sdxl":
        assert list(derived["transformer_layers_per_block"]) == [1, 2, 10]
        assert derived["addition_time_embed_dim"] == 256
        assert derived["projection_class_embeddings_input_dim"] == 2816
    vae = vae_config(models["vae"].state_dict(), family)  # type: ignore[arg-type]
    assert vae["block_out_channels"] == [128, 256, 512, 512]
    text = text_config(_hf_state(models["text_encoder"]), family_config(family, "text_encoder"))
    real_text = family_config(family, "text_encoder")
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
        assert text[key] == real_text[key], key


@pytest.mark.parametrize(
    "family, text_prefix, description",
    [
        ("sd1", "cond_stage_model.transformer.", "SD 1.x checkpoint [ldm layout]"),
        ("sd2", "cond_stage_model.model.", "SD 2.x checkpoint, v-prediction [ldm layout]"),
        ("sdxl", "conditioner.embedders.0.transformer.", "SDXL checkpoint [ldm layout]"),
    ],
)
def test_detects_real_size_layouts(family: str, text_prefix: str, description: str) -> None:
    models = _meta_models(family)
    state = {
        f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(models["unet"].state_dict()).items()
    }
    state |= {
        f"first_stage_model.{k}": v for k, v in vae_to_ldm(models["vae"].state_dict()).items()
    }
    text = _hf_state(models["text_encoder"])
    if family == "sd2":
        text = hf_to_openclip(text)
    state |= {f"{text_prefix}{k}": v for k, v in text.items()}
    assert detect(MetaFile(state)).describe() == description  # type: ignore[arg-type]
    unet_only = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    found = detect(MetaFile(unet_only))  # type: ignore[arg-type]
    assert (found.kind, found.family) == ("unet", family)


# ----- prediction type ---------------------------------------------------------------------------


def _copy_unet_file(source: Path, target: Path, **extra: Any) -> Path:
    state = load_file(source)
    metadata = extra.pop("metadata", None)
    state |= extra
    save_file(state, target, metadata=metadata)
    return target


def test_prediction_markers(models_dir: Path, tmp_path: Path) -> None:
    source = models_dir / "checkpoints" / "tiny.safetensors"

    def found(path: Path) -> str | None:
        return detect(CheckpointFile(path)).prediction_type

    assert found(source) == "epsilon"
    assert found(models_dir / "checkpoints" / "tiny-sd2.safetensors") == "v_prediction"
    marked = _copy_unet_file(source, tmp_path / "vpred.safetensors", v_pred=torch.tensor([]))
    assert found(marked) == "v_prediction"
    declared = _copy_unet_file(
        source, tmp_path / "meta.safetensors", metadata={"modelspec.prediction_type": "v"}
    )
    assert found(declared) == "v_prediction"
    sidecar = _copy_unet_file(source, tmp_path / "yaml.safetensors")
    (tmp_path / "yaml.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert found(sidecar) == "v_prediction"
    (tmp_path / "yaml.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert found(sidecar) == "epsilon"


def test_a_ztsnr_key_marks_a_zero_terminal_snr_model_for_both_loaders(
    models_dir: Path, tmp_path: Path
) -> None:
    """ComfyUI's marker of a zero-SNR v-prediction checkpoint: ``v_pred`` and ``ztsnr`` keys.
    LoadCheckpoint and LoadUNet then give the scheduler config a zero-SNR model's folder says
    (rescaled betas, trailing timesteps), so both scheduler nodes sample its schedule."""
    from nodes.loaders import _load_unet

    source = models_dir / "checkpoints" / "tiny.safetensors"
    marked = _copy_unet_file(
        source, tmp_path / "zsnr.safetensors", v_pred=torch.tensor([]), ztsnr=torch.tensor([])
    )
    found = detect(CheckpointFile(marked))
    assert (found.prediction_type, found.zero_snr) == ("v_prediction", True)
    assert "v-prediction, zero terminal SNR" in found.describe()
    expected = family_config("sd1", "scheduler") | {
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
    }
    assert load_checkpoint_file(marked, torch.float32).scheduler_config == expected
    assert _load_unet(marked, torch.float32, "auto", False).scheduler_config == expected
    plain = load_checkpoint_file(source, torch.float32).scheduler_config
    assert "rescale_betas_zero_snr" not in plain and not detect(CheckpointFile(source)).zero_snr
    # as in ComfyUI, ``ztsnr`` counts only beside ``v_pred``: an epsilon model stays as it was
    alone = _copy_unet_file(source, tmp_path / "ztsnr-only.safetensors", ztsnr=torch.tensor([]))
    found = detect(CheckpointFile(alone))
    assert (found.prediction_type, found.zero_snr) == ("epsilon", False)
    assert load_checkpoint_file(alone, torch.float32).scheduler_config == plain


def test_prediction_override_reaches_the_scheduler(make_executor) -> None:
    result = make_executor().run(
        sd_graph(checkpoint="tiny.safetensors", prediction="v_prediction", save=False, steps=1),
        targets=["sched"],
    )
    assert result.ok, result.error
    assert result.values["sched"]["scheduler"].config["prediction_type"] == "v_prediction"


# ----- pickles -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("ckpt-models")
    (models / "checkpoints").mkdir()
    state = load_file(models_dir / "checkpoints" / "tiny.safetensors")
    torch.save({"state_dict": state, "global_step": 1}, models / "checkpoints" / "tiny.ckpt")
    return models


def _executor(sd_catalog, runtime, models: Path, tmp_path: Path, **env: Any) -> Executor:
    environment = Environment.from_dirs(models, tmp_path / "out", tmp_path / "in", **env)
    return Executor(sd_catalog, env=environment, runtime=runtime)


def test_ckpt_is_refused_unless_allowed(sd_catalog, runtime, ckpt_models, tmp_path, make_executor):
    refused = _executor(sd_catalog, runtime, ckpt_models, tmp_path).run(
        sd_graph(checkpoint="tiny.ckpt", save=False, steps=2), targets=["decode"]
    )
    assert refused.status == "failed" and refused.error.node == "model"
    assert refused.error.exception_type == PickleRefused.__name__
    assert "tiny.ckpt" in refused.error.message and "--allow-pickle" in refused.error.message

    allowed = _executor(sd_catalog, runtime, ckpt_models, tmp_path, allow_pickle=True).run(
        sd_graph(checkpoint="tiny.ckpt", save=False, steps=2), targets=["decode"]
    )
    assert allowed.ok, allowed.error and allowed.error.traceback
    expected = image_of(make_executor, checkpoint="tiny", steps=2)
    assert_same_pixels(allowed.values["decode"]["image"].pixels.numpy(), expected)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))  # type: ignore[attr-defined]


def test_allowed_pickles_still_load_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = str(marker)  # type: ignore[attr-defined]
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": exploit}, tmp_path / "bad.ckpt")
    with pytest.raises(Exception, match=r"(?i)weights.only|unsupported|global"):
        CheckpointFile(tmp_path / "bad.ckpt", allow_pickle=True)
    assert not marker.exists()


# ----- component loaders -----------------------------------------------------------------------


def _component_graph(unet: str, text: str, vae: str, text_2: str = "") -> Any:
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    u = b.add("LoadUNet", id="unet", path=unet)
    t = b.add("LoadTextEncoder", id="text", path=text, path_2=text_2)
    v = b.add("LoadVAE", id="vae", path=vae)
    pos = b.add("TextEncode", id="pos", text_encoder=t.text_encoder, text="a red circle")
    neg = b.add("TextEncode", id="neg", text_encoder=t.text_encoder, text="")
    sched = b.add("Scheduler", id="sched", unet=u.unet, name="euler", steps=3)
    cfg = b.add("CFG", id="cfg", unet=u.unet, positive=pos.conditioning,
                negative=neg.conditioning)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=64, height=64)
    den = b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
                latent=empty.latent)  # fmt: skip
    b.add("VAEDecode", id="decode", vae=v.vae, latent=den.latent)
    return b.build()


@pytest.fixture(scope="module")
def component_files(models_dir: Path) -> dict[str, str]:
    """Separate component files as people download them (original-layout VAE and U-Net, a
    transformers-layout CLIP-L and an OpenCLIP-layout bigG)."""
    vae_dir, unet_dir, text_dir = (models_dir / kind for kind in ("vae", "unet", "text_encoders"))
    for folder in (vae_dir, unet_dir, text_dir):
        folder.mkdir(exist_ok=True)
    for name in ("tiny", "tiny-sdxl"):
        source = models_dir / "checkpoints" / name
        vae = load_file(source / "vae" / "diffusion_pytorch_model.safetensors")
        save_file(vae_to_ldm(vae), vae_dir / f"{name}-vae.safetensors")
        unet = load_file(source / "unet" / "diffusion_pytorch_model.safetensors")
        save_file(unet_to_ldm(unet), unet_dir / f"{name}-unet.safetensors")
    sdxl = models_dir / "checkpoints" / "tiny-sdxl"
    save_file(
        load_file(sdxl / "text_encoder" / "model.safetensors"), text_dir / "clip_l.safetensors"
    )
    bigg = load_file(sdxl / "text_encoder_2" / "model.safetensors")
    save_file({k: v.contiguous() for k, v in hf_to_openclip(bigg).items()},
              text_dir / "clip_g.safetensors")  # fmt: skip
    return {"vae": "tiny-vae.safetensors", "sdxl_vae": "tiny-sdxl-vae.safetensors"}


def test_component_loaders_give_the_checkpoints_pixels(make_executor, component_files) -> None:
    expected = image_of(make_executor, checkpoint="tiny", prompt="a red circle", negative="")
    graph = _component_graph(
        unet="tiny/unet",  # found under checkpoints/, a component folder of a model folder
        text="tiny/text_encoder",
        vae=component_files["vae"],
    )
    result = make_executor().run(graph, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    assert_same_pixels(result.values["decode"]["image"].pixels.numpy(), expected)


def test_sdxl_component_files_load_as_the_folder(make_executor, component_files) -> None:
    expected = image_of(make_executor, checkpoint="tiny-sdxl", prompt="a red circle", negative="")
    graph = _component_graph(
        unet="tiny-sdxl/unet",
        text="clip_l.safetensors",
        text_2="clip_g.safetensors",
        vae=component_files["sdxl_vae"],
    )
    graph = graph.with_values({("vae", "family"): "sdxl"})
    result = make_executor().run(graph, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    assert_same_pixels(result.values["decode"]["image"].pixels.numpy(), expected)


def test_unet_file_alone_gets_its_config_from_shapes(make_executor, models_dir, component_files):
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    b.add("LoadUNet", id="unet", path="tiny-sdxl-unet.safetensors")
    result = make_executor().run(b.build(), targets=["unet"])
    assert result.ok, result.error and result.error.traceback
    unet = result.values["unet"]["unet"]
    folder = models_dir / "checkpoints" / "tiny-sdxl" / "unet"
    expected = json.loads((folder / "config.json").read_text())
    for key in ("addition_time_embed_dim", "projection_class_embeddings_input_dim",
                "cross_attention_dim", "transformer_layers_per_block"):  # fmt: skip
        assert (
            np.atleast_1d(unet.model.config[key]).tolist() == np.atleast_1d(expected[key]).tolist()
        ), key
    reference = load_file(folder / "diffusion_pytorch_model.safetensors")
    state = unet.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.items())
    assert (
        unet.latent_scale == 8 and unet.scheduler_config["_class_name"] == "EulerDiscreteScheduler"
    )


def test_a_lora_named_as_a_checkpoint_is_a_clear_error(make_executor, models_dir, tmp_path):
    lora = models_dir / "checkpoints" / "not-a-model.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, lora)
    try:
        result = make_executor().run(
            sd_graph(checkpoint=lora.name, save=False, steps=1), targets=["decode"]
        )
    finally:
        lora.unlink()
    assert result.status == "failed" and result.error.node == "model"
    assert "not a full Stable Diffusion checkpoint" in result.error.message
    assert "LoRA" in result.error.message


# ----- architecture stored in the file ---------------------------------------------------------

MICRO = "micro-demo"
UNET_FIELDS = (
    "norm_num_groups",
    "attention_head_dim",
    "block_out_channels",
    "down_block_types",
    "up_block_types",
    "layers_per_block",
    "cross_attention_dim",
    "sample_size",
)
VAE_FIELDS = (
    "norm_num_groups",
    "scaling_factor",
    "block_out_channels",
    "latent_channels",
    "sample_size",
)
TEXT_FIELDS = (
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "projection_dim",
)


@pytest.fixture(scope="module")
def micro_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with the micro demo architecture (U-Net groups 4 / 2 heads, VAE groups 4, a
    non-SD latent scaling: nothing its shapes reveal) as a folder and as single files written
    with and without its architecture."""
    from nodes.demo import train_demo
    from nodes.tiny import write_single_file

    models = tmp_path_factory.mktemp("micro-models")
    checkpoints = models / "checkpoints"
    demo = train_demo.build_models(train_demo.ModelSizes.micro(), seed=0)
    demo.vae.register_to_config(scaling_factor=0.3)
    train_demo.save_diffusers_folder(demo, checkpoints / MICRO)
    write_single_file(checkpoints / MICRO, checkpoints / f"{MICRO}.safetensors", architecture=True)
    write_single_file(checkpoints / MICRO, checkpoints / f"{MICRO}-shapes.safetensors")
    return models


def _plain(value: Any) -> Any:
    """Configs hold tuples or lists depending on who built them; compare them as JSON does."""
    return json.loads(json.dumps(value))


def _loaded_parts(executor: Executor, path: str) -> Any:
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    b.add("LoadCheckpoint", id="model", path=path)
    result = executor.run(b.build(), targets=["model"])
    assert result.ok, result.error and result.error.traceback
    return result.values["model"]


def test_stored_architecture_loads_as_the_folder(sd_catalog, runtime, micro_models, tmp_path):
    def make() -> Executor:
        return _executor(sd_catalog, runtime, micro_models, tmp_path)

    folder = _loaded_parts(make(), MICRO)
    single = _loaded_parts(make(), f"{MICRO}.safetensors")
    for part, model, fields in (
        ("unet", lambda p: p["unet"].model, UNET_FIELDS),
        ("vae", lambda p: p["vae"].model, VAE_FIELDS),
        ("text", lambda p: p["text_encoder"].model, TEXT_FIELDS),
    ):
        for field in fields:
            expected = _plain(getattr(model(folder).config, field))
            assert _plain(getattr(model(single).config, field)) == expected, (part, field)
    assert single["unet"].model.config.norm_num_groups == 4
    assert single["vae"].model.config.scaling_factor == 0.3
    assert single["unet"].latent_scale == single["vae"].scale_factor == 2

    settings = {"prompt": "a red circle", "negative": "blue", "steps": 3}
    expected = image_of(make, checkpoint=MICRO, **settings)
    assert_same_pixels(image_of(make, checkpoint=f"{MICRO}.safetensors", **settings), expected)


def test_component_loaders_read_the_stored_architecture(
    sd_catalog, runtime, micro_models, tmp_path
) -> None:
    """LoadUNet and LoadVAE on a full checkpoint file take its stored configs too: the latent
    scale from the stored VAE (2 for the micro model, not SD's 8) and the VAE's own scaling."""

    def make() -> Executor:
        return _executor(sd_catalog, runtime, micro_models, tmp_path)

    single = f"{MICRO}.safetensors"
    graph = _component_graph(unet=single, text=f"{MICRO}/text_encoder", vae=single)
    result = make().run(graph, targets=["unet", "vae", "decode"])
    assert result.ok, result.error and result.error.traceback
    assert result.values["unet"]["unet"].latent_scale == 2
    assert result.values["unet"]["unet"].model.config.norm_num_groups == 4
    assert result.values["vae"]["vae"].model.config.scaling_factor == 0.3
    expected = image_of(make, checkpoint=MICRO, prompt="a red circle", negative="")
    assert_same_pixels(result.values["decode"]["image"].pixels.numpy(), expected)


def test_without_stored_architecture_the_family_config_decides(micro_models: Path) -> None:
    from nodes.ldm_layout import unet_to_diffusers, vae_to_diffusers

    checkpoints = micro_models / "checkpoints"
    plain = CheckpointFile(checkpoints / f"{MICRO}-shapes.safetensors")
    assert ARCHITECTURE_KEY not in plain.metadata and stored_architecture(plain) == {}
    unet_state = unet_to_diffusers(plain.read(UNET_PREFIX))
    derived = unet_config(unet_state, "sd1")
    assert (derived["norm_num_groups"], derived["attention_head_dim"]) == (32, 8)
    vae_state = vae_to_diffusers(plain.read(VAE_PREFIX))
    assert vae_config(vae_state, "sd1")["scaling_factor"] == 0.18215
    with pytest.raises(ValueError):  # SD's 32 groups do not divide the micro model's channels
        load_checkpoint_file(plain.path, torch.float32)

    stored = stored_architecture(CheckpointFile(checkpoints / f"{MICRO}.safetensors"))
    assert sorted(stored) == ["text_encoder", "unet", "vae"]
    folder_unet = json.loads((checkpoints / MICRO / "unet" / "config.json").read_text())
    assert unet_config(unet_state, "sd1", stored=stored["unet"])["norm_num_groups"] == 4
    assert stored["unet"] == {k: v for k, v in folder_unet.items() if not k.startswith("_")}
    assert vae_config(vae_state, "sd1", stored=stored["vae"])["scaling_factor"] == 0.3


@pytest.mark.parametrize(
    "value, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"unet": 3}', "'unet' must be a JSON object"),
        ('{"unnet": {}}', "unknown components"),
    ],
)
def test_malformed_stored_architecture_is_a_clear_error(
    micro_models: Path, tmp_path: Path, value: str, message: str
) -> None:
    source = micro_models / "checkpoints" / f"{MICRO}-shapes.safetensors"
    bad = _copy_unet_file(source, tmp_path / "bad.safetensors", metadata={ARCHITECTURE_KEY: value})
    with pytest.raises(ValueError, match=message) as raised:
        load_checkpoint_file(bad, torch.float32)
    assert ARCHITECTURE_KEY in str(raised.value) and "bad.safetensors" in str(raised.value)


def test_malformed_stored_architecture_fails_the_loader_node(
    sd_catalog, runtime, micro_models, tmp_path
) -> None:
    source = micro_models / "checkpoints" / f"{MICRO}-shapes.safetensors"
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    bad = models / "checkpoints" / "bad.safetensors"
    _copy_unet_file(source, bad, metadata={ARCHITECTURE_KEY: "{not json"})
    result = _executor(sd_catalog, runtime, models, tmp_path).run(
        sd_graph(checkpoint=bad.name, save=False, steps=1), targets=["decode"]
    )
    assert result.status == "failed" and result.error.node == "model"
    assert result.error.exception_type == "ValueError"
    assert ARCHITECTURE_KEY in result.error.message and "bad.safetensors" in result.error.message


def test_stored_architecture_must_still_fit_the_weights(micro_models: Path, tmp_path) -> None:
    source = micro_models / "checkpoints" / f"{MICRO}.safetensors"
    stored = json.loads(CheckpointFile(source).metadata[ARCHITECTURE_KEY])
    stored["unet"]["block_out_channels"] = [8, 32]  # the file's second level has 16 channels
    wrong = _copy_unet_file(
        source, tmp_path / "wrong.safetensors", metadata={ARCHITECTURE_KEY: json.dumps(stored)}
    )
    with pytest.raises(ValueError, match="U-Net: the weights do not fit"):
        load_checkpoint_file(wrong, torch.float32)


def test_models_list_describes_a_file_with_stored_architecture(micro_models: Path) -> None:
    from nodes.inventory import describe

    path = micro_models / "checkpoints" / f"{MICRO}.safetensors"
    assert describe(path) == "SD 1.x checkpoint [ldm layout]"


# ----- nodeflow models ------------------------------------------------------------------------


def test_models_command_lists_kinds_and_architectures(models_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nodeflow", "models", "list", "--models-dir", str(models_dir),
         "--json"],
        capture_output=True, text=True, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    entries = {f"{e['kind']}/{e['name']}": e["architecture"] for e in json.loads(done.stdout)}
    assert entries["checkpoints/tiny"] == "SD 1.x diffusers folder"
    assert entries["checkpoints/tiny-sd2"] == "SD 2.x (v-prediction) diffusers folder"
    assert entries["checkpoints/tiny-sdxl"] == "SDXL diffusers folder"
    assert entries["checkpoints/tiny.safetensors"] == "SD 1.x checkpoint [ldm layout]"
    assert entries["checkpoints/tiny-sdxl.safetensors"] == "SDXL checkpoint [ldm layout]"
