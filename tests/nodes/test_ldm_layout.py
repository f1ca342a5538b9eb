"""Tests for nodes.ldm_layout, with diffusers' own single-file converters as the oracle.

Each test builds a tiny random diffusers/transformers model, converts its state dict to the LDM
(or OpenCLIP) layout with our code, and lets diffusers convert that back: getting the model's own
tensors under its own keys means our LDM names are the ones diffusers expects from a real
single-file checkpoint. Real-size configs are built on the meta device to check key names only.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from nodes.ldm_layout import (
    hf_to_openclip,
    openclip_to_hf,
    unet_diffusers_prefix_map,
    unet_ldm_prefix_map,
    unet_to_diffusers,
    unet_to_ldm,
    vae_to_diffusers,
    vae_to_ldm,
)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# diffusers ignores text_projection (and resblocks.23) under SD 2's prefix, so use SDXL's.
OPENCLIP_PREFIX = "conditioner.embedders.1.model."

TINY_UNETS: dict[str, dict[str, Any]] = {
    "sd1": {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32,
        "sample_size": 32,
    },
    "sd2": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "attention_head_dim": (1, 1, 1),
        "use_linear_projection": True,
        "cross_attention_dim": 32,
        "sample_size": 32,
    },
    "sdxl": {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2),
        "attention_head_dim": (1, 1),
        "use_linear_projection": True,
        "cross_attention_dim": 64,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,
        "sample_size": 32,
    },
    "one_layer": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32,
        "sample_size": 32,
    },
}

SD15_UNET: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "sample_size": 64,
}
SDXL_UNET: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
}
REAL_UNETS = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}
SD15_LDM_KEYS = [
    "input_blocks.4.1.proj_in.weight",
    "input_blocks.3.0.op.weight",
    "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    "output_blocks.2.1.conv.weight",
    "output_blocks.5.2.conv.weight",
    "output_blocks.11.1.transformer_blocks.0.ff.net.2.weight",
    "out.2.weight",
    "time_embed.2.bias",
    "input_blocks.1.0.in_layers.2.weight",
    "input_blocks.4.0.skip_connection.weight",
    "output_blocks.0.0.emb_layers.1.weight",
]
SDXL_LDM_KEYS = [
    "label_emb.0.0.weight",
    "label_emb.0.2.bias",
    "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight",
    "input_blocks.7.1.transformer_blocks.9.ff.net.2.weight",
    "output_blocks.2.2.conv.weight",
    "output_blocks.5.2.conv.weight",
    "middle_block.1.transformer_blocks.9.attn2.to_v.weight",
    "output_blocks.8.0.out_layers.3.weight",
]


@cache
def _tiny_unet(name: str) -> UNet2DConditionModel:
    """Built once per config: tests only read it (and load copies into fresh models)."""
    torch.manual_seed(0)
    return UNet2DConditionModel(**TINY_UNETS[name]).eval()


@cache
def _meta_unet(name: str) -> UNet2DConditionModel:
    """A real-size U-Net without memory for its weights: enough for key names and shapes."""
    with torch.device("meta"):
        return UNet2DConditionModel(**REAL_UNETS[name])


def _tiny_clip(with_projection: bool, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=1000,
        projection_dim=16,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    model = CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)
    return model.eval()


def _tiny_vae(block_out_channels: tuple[int, ...], layers_per_block: int) -> AutoencoderKL:
    torch.manual_seed(0)
    levels = len(block_out_channels)
    return AutoencoderKL(
        block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=layers_per_block,
        latent_channels=4,
        sample_size=32,
    ).eval()


def _prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _assert_same_tensors(actual: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        assert torch.equal(actual[key], value), key


def _storage(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


# --- U-Net -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY_UNETS))
def test_unet_ldm_keys_are_what_diffusers_converts_back(name: str) -> None:
    unet = _tiny_unet(name)
    state = unet.state_dict()
    ldm = unet_to_ldm(state)
    assert not any(key.startswith(("down_blocks", "up_blocks", "mid_block")) for key in ldm)
    converted = convert_ldm_unet_checkpoint(_prefixed(UNET_PREFIX, ldm), dict(unet.config))
    _assert_same_tensors(converted, state)


@pytest.mark.parametrize("name", sorted(TINY_UNETS))
def test_unet_round_trip_keeps_the_tensor_objects(name: str) -> None:
    state = _tiny_unet(name).state_dict()
    back = unet_to_diffusers(unet_to_ldm(state))
    assert sorted(back) == sorted(state)
    assert all(back[key] is state[key] for key in state)


@pytest.mark.parametrize("name", sorted(TINY_UNETS))
def test_unet_to_diffusers_loads_an_oracle_made_ldm_dict(name: str) -> None:
    """From LDM keys alone (no config), the layout is inferred and the model loads strictly."""
    unet = _tiny_unet(name)
    ldm = unet_to_ldm(unet.state_dict())
    fresh = UNet2DConditionModel(**TINY_UNETS[name])
    fresh.load_state_dict(unet_to_diffusers(ldm), strict=True)
    _assert_same_tensors(fresh.state_dict(), unet.state_dict())


@pytest.mark.parametrize("name", sorted(TINY_UNETS))
def test_prefix_maps_inferred_from_either_side_agree(name: str) -> None:
    state = _tiny_unet(name).state_dict()
    forward = unet_ldm_prefix_map(state)
    backward = unet_diffusers_prefix_map(unet_to_ldm(state))
    assert backward == {diffusers: ldm for ldm, diffusers in forward.items()}


def test_sd15_prefix_map_matches_the_original_numbering() -> None:
    prefix_map = unet_ldm_prefix_map(_meta_unet("sd15").state_dict())
    expected = {
        "time_embed.0": "time_embedding.linear_1",
        "time_embed.2": "time_embedding.linear_2",
        "input_blocks.0.0": "conv_in",
        "input_blocks.1.0": "down_blocks.0.resnets.0",
        "input_blocks.1.1": "down_blocks.0.attentions.0",
        "input_blocks.3.0.op": "down_blocks.0.downsamplers.0.conv",
        "input_blocks.11.0": "down_blocks.3.resnets.1",
        "middle_block.0": "mid_block.resnets.0",
        "middle_block.1": "mid_block.attentions.0",
        "middle_block.2": "mid_block.resnets.1",
        "output_blocks.0.0": "up_blocks.0.resnets.0",
        "output_blocks.2.1.conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks.3.1": "up_blocks.1.attentions.0",
        "output_blocks.5.2.conv": "up_blocks.1.upsamplers.0.conv",
        "out.0": "conv_norm_out",
        "out.2": "conv_out",
    }
    assert expected.items() <= prefix_map.items()
    assert "label_emb.0.0" not in prefix_map
    assert "input_blocks.12.0" not in prefix_map
    assert "output_blocks.11.2.conv" not in prefix_map


@pytest.mark.parametrize(
    ("name", "expected_keys"), [("sd15", SD15_LDM_KEYS), ("sdxl", SDXL_LDM_KEYS)]
)
def test_real_size_unet_key_names(name: str, expected_keys: list[str]) -> None:
    unet = _meta_unet(name)
    state = unet.state_dict()
    ldm = unet_to_ldm(state)
    assert set(expected_keys) <= set(ldm)
    converted = convert_ldm_unet_checkpoint(_prefixed(UNET_PREFIX, ldm), dict(unet.config))
    assert sorted(converted) == sorted(state)
    assert sorted(unet_to_diffusers(ldm)) == sorted(state)


def test_sdxl_prefix_map_has_label_emb_and_no_last_downsampler() -> None:
    prefix_map = unet_ldm_prefix_map(_meta_unet("sdxl").state_dict())
    assert prefix_map["label_emb.0.0"] == "add_embedding.linear_1"
    assert prefix_map["label_emb.0.2"] == "add_embedding.linear_2"
    assert prefix_map["input_blocks.8.0"] == "down_blocks.2.resnets.1"
    assert prefix_map["output_blocks.2.2.conv"] == "up_blocks.0.upsamplers.0.conv"
    assert not any(diffusers.startswith("down_blocks.2.down") for diffusers in prefix_map.values())
    assert "input_blocks.9.0" not in prefix_map


def test_unet_renames_share_storage() -> None:
    ldm = unet_to_ldm(_tiny_unet("sd1").state_dict())
    diffusers = unet_to_diffusers(ldm)
    source = ldm["input_blocks.1.0.in_layers.2.weight"]
    assert diffusers["down_blocks.0.resnets.0.conv1.weight"].data_ptr() == source.data_ptr()
    assert diffusers["down_blocks.0.resnets.0.conv1.weight"] is source


def test_unet_ema_keys_are_dropped() -> None:
    ldm = unet_to_ldm(_tiny_unet("sd1").state_dict())
    ldm["model_ema.decay"] = torch.tensor(0.9999)
    assert "model_ema.decay" not in unet_to_diffusers(ldm)


@pytest.mark.parametrize(
    "bad_key",
    [
        "input_blocks.1.0.bogus.weight",  # unknown module inside a resnet
        "input_blocks.1.0.in_layers.1.weight",  # in_layers.1 is the SiLU, it has no weights
        "middle_block.1.extra.weight",  # unknown module inside a spatial transformer
        "out.1.weight",  # the SiLU of the output head
        "label_emb.weight",  # a class-embedding table this layout has no place for
        "something_else.weight",
    ],
)
def test_unplaceable_ldm_unet_key_raises_naming_it(bad_key: str) -> None:
    ldm = unet_to_ldm(_tiny_unet("sd1").state_dict())
    ldm[bad_key] = torch.zeros(1)
    with pytest.raises(ValueError, match=re.escape(bad_key)):
        unet_to_diffusers(ldm)


@pytest.mark.parametrize(
    "bad_key",
    [
        "down_blocks.0.resnets.0.bogus.weight",
        "mid_block.attentions.0.weird.weight",
        "class_embedding.linear_1.weight",
        "conv_in.extra.weight",
    ],
)
def test_unplaceable_diffusers_unet_key_raises_naming_it(bad_key: str) -> None:
    state = dict(_tiny_unet("sd1").state_dict())
    state[bad_key] = torch.zeros(1)
    with pytest.raises(ValueError, match=re.escape(bad_key)):
        unet_to_ldm(state)


# --- VAE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block_out_channels", "layers_per_block"),
    [((32, 64), 1), ((32, 64, 64), 2)],
    ids=["two-levels", "three-levels"],
)
def test_vae_ldm_keys_are_what_diffusers_converts_back(
    block_out_channels: tuple[int, ...], layers_per_block: int
) -> None:
    vae = _tiny_vae(block_out_channels, layers_per_block)
    state = vae.state_dict()
    ldm = vae_to_ldm(state)
    assert ldm["encoder.mid.attn_1.q.weight"].ndim == 4
    assert "decoder.up.0.upsample.conv.weight" not in ldm  # LDM's level 0 is the top one
    assert f"decoder.up.{len(block_out_channels) - 1}.upsample.conv.weight" in ldm
    converted = convert_ldm_vae_checkpoint(_prefixed(VAE_PREFIX, ldm), dict(vae.config))
    _assert_same_tensors(converted, state)
    back = vae_to_diffusers(ldm)
    _assert_same_tensors(back, state)
    fresh = AutoencoderKL(**dict(vae.config))
    fresh.load_state_dict(back, strict=True)


def test_vae_attention_weights_are_views() -> None:
    state = _tiny_vae((32, 64), 1).state_dict()
    ldm = vae_to_ldm(state)
    back = vae_to_diffusers(ldm)
    for ldm_name, name in [("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")]:
        conv = ldm[f"decoder.mid.attn_1.{ldm_name}.weight"]
        linear = back[f"decoder.mid_block.attentions.0.{name}.weight"]
        assert conv.shape[2:] == (1, 1)
        assert linear.shape == conv.shape[:2]
        assert (
            _storage(conv)
            == _storage(linear)
            == _storage(state[f"decoder.mid_block.attentions.0.{name}.weight"])
        )
    assert back["encoder.conv_in.weight"] is state["encoder.conv_in.weight"]
    assert (
        back["decoder.up_blocks.0.resnets.0.conv1.weight"]
        is ldm["decoder.up.1.block.0.conv1.weight"]
    )


def test_vae_ignored_and_unplaceable_keys() -> None:
    state = _tiny_vae((32, 64), 1).state_dict()
    ldm = vae_to_ldm(state)
    ldm["loss.logvar"] = torch.zeros(())
    ldm["model_ema.decay"] = torch.zeros(())
    assert sorted(vae_to_diffusers(ldm)) == sorted(state)
    for bad_key in ["encoder.down.0.attn.0.q.weight", "decoder.mid.attn_1.qkv.weight"]:
        with pytest.raises(ValueError, match=re.escape(bad_key)):
            vae_to_diffusers({**ldm, bad_key: torch.zeros(1)})
    with pytest.raises(ValueError, match=r"quant_conv\.extra\.weight"):
        vae_to_ldm({"quant_conv.extra.weight": torch.zeros(1)})


# --- OpenCLIP text encoder ---------------------------------------------------------------------


def test_openclip_keys_are_what_diffusers_converts_back() -> None:
    model = _tiny_clip(with_projection=True)
    state = model.state_dict()
    openclip = hf_to_openclip(state)
    assert openclip["text_projection"].shape == (32, 16)  # [width, projection], used as x @ P
    assert openclip["transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    checkpoint = _prefixed(OPENCLIP_PREFIX, openclip)
    converted = convert_open_clip_checkpoint(model, checkpoint, prefix=OPENCLIP_PREFIX)
    _assert_same_tensors(converted, state)
    fresh = _tiny_clip(with_projection=True, seed=1)
    fresh.load_state_dict(converted, strict=True)
    _assert_same_tensors(fresh.state_dict(), state)


def _file_keys(model: CLIPTextModel, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """State-dict keys as files spell them: transformers >= 5.6 drops ``text_model.`` in memory."""
    if hasattr(model, "text_model"):
        return dict(state)
    return {"text_model." + key: value for key, value in state.items()}


def test_openclip_without_projection_matches_diffusers_sd2_path() -> None:
    model = _tiny_clip(with_projection=False)
    state = model.state_dict()
    openclip = hf_to_openclip(state)
    assert "text_projection" not in openclip
    assert "transformer.resblocks.2.attn.in_proj_bias" in openclip
    prefix = "cond_stage_model.model."
    converted = convert_open_clip_checkpoint(model, _prefixed(prefix, openclip), prefix=prefix)
    _assert_same_tensors(converted, _file_keys(model, state))
    hf = openclip_to_hf(openclip)
    _assert_same_tensors(hf, _file_keys(model, state))
    fresh = _tiny_clip(with_projection=False, seed=1)
    in_memory = {key.removeprefix("text_model."): value for key, value in hf.items()}
    if hasattr(fresh, "text_model"):
        in_memory = hf
    fresh.load_state_dict(in_memory, strict=True)
    _assert_same_tensors(fresh.state_dict(), state)


def test_hf_to_openclip_accepts_keys_with_and_without_text_model() -> None:
    state = _tiny_clip(with_projection=True).state_dict()
    bare = {key.removeprefix("text_model."): value for key, value in state.items()}
    assert sorted(hf_to_openclip(bare)) == sorted(hf_to_openclip(state))
    clash = {**state, "final_layer_norm.weight": state["text_model.final_layer_norm.weight"]}
    with pytest.raises(ValueError, match=r"final_layer_norm\.weight"):
        hf_to_openclip(clash)


def test_openclip_round_trip_and_views() -> None:
    state = _tiny_clip(with_projection=True).state_dict()
    openclip = hf_to_openclip(state)
    openclip["logit_scale"] = torch.tensor(4.6)
    hf = openclip_to_hf(openclip)
    _assert_same_tensors(hf, state)
    fused = openclip["transformer.resblocks.1.attn.in_proj_weight"]
    for name in "qkv":
        split = hf[f"text_model.encoder.layers.1.self_attn.{name}_proj.weight"]
        assert _storage(split) == _storage(fused)
    assert _storage(hf["text_projection.weight"]) == _storage(openclip["text_projection"])
    token = "text_model.embeddings.token_embedding.weight"
    assert hf[token] is openclip["token_embedding.weight"]
    assert (
        hf["text_model.encoder.layers.2.mlp.fc2.bias"]
        is openclip["transformer.resblocks.2.mlp.c_proj.bias"]
    )


def test_openclip_ignored_and_unplaceable_keys() -> None:
    state = dict(_tiny_clip(with_projection=True).state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    openclip = hf_to_openclip(state)
    assert not any("position_ids" in key for key in openclip)
    for bad_key in ["visual.proj", "transformer.resblocks.0.attn.bogus.weight", "attn_mask"]:
        with pytest.raises(ValueError, match=re.escape(bad_key)):
            openclip_to_hf({**openclip, bad_key: torch.zeros(1)})
    missing_k = {
        key: value for key, value in state.items() if "layers.0.self_attn.k_proj" not in key
    }
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn"):
        hf_to_openclip(missing_k)
    with pytest.raises(ValueError, match=r"text_model\.encoder\.layers\.0\.mlp\.fc3\.weight"):
        hf_to_openclip({**state, "text_model.encoder.layers.0.mlp.fc3.weight": torch.zeros(1)})
