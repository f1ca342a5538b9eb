"""Tests for the tiny Stable Diffusion factory that the rest of the test suite builds on."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from nodes.clip_vocab import END_OF_WORD, VOCAB_SIZE, bytes_to_unicode
from nodes.tiny import make_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_sd: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer", local_files_only=True)


def _weight_hashes(path: Path) -> dict[str, str]:
    return {
        str(file.relative_to(path)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(path.rglob("*.safetensors"))
    }


def test_folder_layout(tiny_sd: Path) -> None:
    for name in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                 "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
                 "tokenizer/special_tokens_map.json", "text_encoder/model.safetensors",
                 "unet/diffusion_pytorch_model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors"):  # fmt: skip
        assert (tiny_sd / name).is_file(), name
    assert not list(tiny_sd.rglob("*.bin")), "weights must be safetensors only"
    model_index = json.loads((tiny_sd / "model_index.json").read_text())
    assert model_index["_class_name"] == "StableDiffusionPipeline"
    assert model_index["safety_checker"] == [None, None]
    assert model_index["feature_extractor"] == [None, None]


def test_pipeline_generates_an_image(tiny_sd: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    assert pipe.vae_scale_factor == 2
    out = pipe(
        "a red circle on a blue background",
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 64, 64, 3)
    assert np.isfinite(out.images).all()


def test_components_load_on_their_own(tiny_sd: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(
        tiny_sd, subfolder="text_encoder", local_files_only=True
    )
    for model in (unet, vae, text_encoder):
        params = list(model.parameters())
        assert all(p.dtype == torch.float32 for p in params)
        # "Tiny" means diffusers-test-fixture sized, not a real checkpoint.
        assert 10_000 < sum(p.numel() for p in params) < 5_000_000
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert unet.config.in_channels == vae.config.latent_channels == 4
    assert vae.config.scaling_factor == pytest.approx(0.18215)


def test_scheduler_is_sd15s(tiny_sd: Path) -> None:
    scheduler = PNDMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    config = scheduler.config
    assert (config.beta_start, config.beta_end) == (0.00085, 0.012)
    assert config.beta_schedule == "scaled_linear"
    assert config.num_train_timesteps == 1000
    assert config.skip_prk_steps and not config.set_alpha_to_one
    assert config.steps_offset == 1
    assert config.prediction_type == "epsilon"
    # Not a PNDM argument, but it must survive a switch to a scheduler that clips by default.
    assert DDIMScheduler.from_config(config).config.clip_sample is False


def test_same_seed_gives_identical_weights(tiny_sd: Path, tmp_path: Path) -> None:
    same = _weight_hashes(make_tiny_sd(tmp_path / "same", seed=0))
    other = _weight_hashes(make_tiny_sd(tmp_path / "other", seed=1))
    reference = _weight_hashes(tiny_sd)
    assert len(reference) == 3
    assert same == reference
    for name, digest in other.items():
        assert digest != reference[name], name


def test_does_not_disturb_the_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    make_tiny_sd(tmp_path, seed=0)
    assert torch.equal(torch.rand(4), expected)


def test_tokenizer_is_real_clips(tokenizer: CLIPTokenizer) -> None:
    """Token ids as published for OpenAI's CLIP ViT-L/14 (e.g. in its model card examples)."""
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    # Case and punctuation are handled like real CLIP: lowercased, punctuation split off.
    assert tokenizer.tokenize("A Photo of a CAT, high quality") == [
        "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", ",</w>", "high</w>", "quality</w>"
    ]  # fmt: skip


def test_any_text_tokenizes_without_unknown_tokens(tokenizer: CLIPTokenizer) -> None:
    text = "zqx ünïcode 🙂 日本語 \x00\t{}"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    # The unknown token is <|endoftext|>, so an unknown piece would show up as an early EOS.
    assert tokenizer.unk_token_id == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]
    assert tokenizer.bos_token_id not in ids[1:-1]
    # Byte fallback is lossless (up to CLIP's normalisation: NFC, lowercase, whitespace -> " ").
    expected = " ".join(unicodedata.normalize("NFC", text).lower().split())
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.replace(" ", "") == expected.replace(" ", "")


def test_tokenizer_pads_to_77_with_eos(tokenizer: CLIPTokenizer) -> None:
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77
    a, cat = tokenizer.convert_tokens_to_ids(["a</w>", "cat</w>"])
    assert ids[:4] == [tokenizer.bos_token_id, a, cat, tokenizer.eos_token_id]
    assert set(ids[4:]) == {tokenizer.pad_token_id} == {tokenizer.eos_token_id}


def test_vocabulary_and_merges_are_consistent(tiny_sd: Path) -> None:
    vocab = json.loads((tiny_sd / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(len(vocab)))
    for char in bytes_to_unicode().values():
        assert char in vocab and char + END_OF_WORD in vocab
    lines = (tiny_sd / "tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    assert len(lines) > 1
    for line in lines[1:]:
        left, right = line.split(" ")
        assert left in vocab and right in vocab and left + right in vocab, line
    # Special tokens last, as in real CLIP (49406, 49407).
    assert vocab["<|startoftext|>"] == len(vocab) - 2
    assert vocab["<|endoftext|>"] == len(vocab) - 1


def test_text_encoder_ids_match_tokenizer(tiny_sd: Path, tokenizer: CLIPTokenizer) -> None:
    text_encoder = CLIPTextModel.from_pretrained(
        tiny_sd, subfolder="text_encoder", local_files_only=True
    )
    config = text_encoder.config
    assert config.vocab_size == len(tokenizer)
    assert config.bos_token_id == tokenizer.bos_token_id
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.max_position_embeddings == tokenizer.model_max_length
    assert config.eos_token_id != 2, "eos_token_id == 2 selects transformers' legacy pooling"

    # Pooling must pick the first <|endoftext|>, not a padding one further along.
    batch = tokenizer(["a cat", "a large red circle on the blue sky"], padding="max_length",
                      max_length=77, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        out = text_encoder(batch.input_ids)
    assert out.last_hidden_state.shape == (2, 77, 32)
    first_eos = (batch.input_ids == tokenizer.eos_token_id).int().argmax(dim=-1)
    assert first_eos.tolist() == [3, 9]
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[[0, 1], first_eos])
    assert not torch.allclose(out.pooler_output[0], out.last_hidden_state[0, -1])


def test_vae_downsamples_by_two(tiny_sd: Path) -> None:
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae", local_files_only=True)
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 2
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.mode()
        decoded = vae.decode(latents).sample
    assert latents.shape == (1, 4, 32, 32)
    assert decoded.shape == (1, 3, 64, 64)
