"""The tiny SD3/Flux makers write the real diffusers layouts, with the real T5 vocabulary."""

from __future__ import annotations

import json

import pytest

from nodeflow.cli import main
from nodes.t5 import t5_tokenizer


def test_the_shipped_t5_tokenizer_gives_the_published_ids():
    tokenizer = t5_tokenizer()
    # T5's SentencePiece ids, as published with t5-base / t5-v1_1 ("Hello world" -> 8774, 296)
    assert tokenizer("Hello world").input_ids == [8774, 296, 1]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == 32100


@pytest.mark.parametrize(
    "family, pipeline, t5_folder",
    [
        ("sd3", "StableDiffusion3Pipeline", "text_encoder_3"),
        ("sd3-no-t5", "StableDiffusion3Pipeline", None),
        ("flux", "FluxPipeline", "text_encoder_2"),
    ],
)
def test_make_tiny_writes_flow_model_folders(tmp_path, capsys, family, pipeline, t5_folder):
    path = tmp_path / family
    assert main(["models", "make-tiny", str(path), "--family", family]) == 0
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert (path / "transformer" / "config.json").is_file()
    vae = json.loads((path / "vae" / "config.json").read_text())
    assert vae["latent_channels"] == 16 and vae["shift_factor"] > 0
    if t5_folder is not None:
        config = json.loads((path / t5_folder / "config.json").read_text())
        assert config["architectures"] == ["T5EncoderModel"]
    else:
        assert index["text_encoder_3"] == [None, None]
    bad = ["models", "make-tiny", str(tmp_path / "x"), "--family", family, "--single-file"]
    assert main(bad) == 2
