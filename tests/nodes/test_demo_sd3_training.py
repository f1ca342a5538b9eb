"""The demo-sd3 training script (``nodes.demo.train_sd3``): its one-token stand-in for the
pipeline's T5 zeros computes what the pipeline computes, its objective is rectified flow, an
interrupted run resumes to the same weights, and what it writes diffusers' SD3 pipeline loads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nodes.demo.sd3_null_tokens import NullTokenAttention, null_token_bias
from nodes.demo.train_sd3 import SD3Sizes, build_models, encode, main


@pytest.fixture(scope="module")
def micro():
    models = build_models(SD3Sizes.micro(), seed=3)
    for module in (models.vae, *models.trained()):
        module.eval()
    return models


def test_one_biased_zero_token_computes_what_n_zero_tokens_compute(micro):
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    torch.manual_seed(0)
    transformer = micro.transformer
    # random, non-zero biases so the zero tokens carry something (a fresh model's are zero)
    with torch.no_grad():
        for param in transformer.parameters():
            param.add_(0.05 * torch.randn_like(param))
    latents = torch.randn(2, 16, 16, 16)
    ids = torch.randint(0, 49406, (2, 77))
    tokens, pooled = encode(micro, ids, ids)
    counts = torch.tensor([5, 256])
    timestep = torch.tensor([300.0, 800.0])
    expected = []
    transformer.set_attn_processor(JointAttnProcessor2_0())
    with torch.no_grad():
        for row, count in enumerate(counts.tolist()):
            full = torch.cat(
                [tokens[row : row + 1, :-1], tokens.new_zeros(1, count, tokens.shape[-1])], 1
            )
            expected.append(transformer(latents[row : row + 1], full, pooled[row : row + 1],
                                        timestep[row : row + 1], return_dict=False)[0])  # fmt: skip
        attention = NullTokenAttention()
        transformer.set_attn_processor(attention)
        attention.bias = null_token_bias(counts, 64, tokens.shape[1])
        got = transformer(latents, tokens, pooled, timestep, return_dict=False)[0]
    transformer.set_attn_processor(JointAttnProcessor2_0())
    assert (got - torch.cat(expected)).abs().max().item() < 1e-5
    # and the count matters: with one zero token the output differs
    assert (expected[0] - expected[1]).abs().max().item() > 1e-3


def test_the_bias_is_log_n_on_the_last_prompt_token_only():
    bias = null_token_bias(torch.tensor([1, 256]), 4, 3)
    assert bias.shape == (2, 1, 1, 7)
    assert bias[0].abs().max().item() == 0.0
    assert bias[1, 0, 0, -1].item() == pytest.approx(math.log(256))
    assert bias[1, 0, 0, :-1].abs().max().item() == 0.0


def test_the_loss_is_the_rectified_flow_velocity_error(micro, monkeypatch):
    """With the transformer replaced by the exact velocity (noise - x0, known here because the
    generator is replayed), the loss is zero; with a zero prediction it is E|noise - x0|^2."""
    from nodes.demo import train_sd3

    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    ids = (torch.randint(0, 49406, (3, 77)), torch.randint(0, 49406, (3, 77)))
    seen: dict[str, torch.Tensor] = {}

    def replay(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = train_sd3.to_latents(micro.vae, pixels, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.sigmoid(torch.randn(3, generator=generator))
        return x0, noise, t

    x0, noise, t = replay(torch.Generator().manual_seed(7))

    class Oracle(torch.nn.Module):
        def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections,
                    return_dict):  # fmt: skip
            seen["t"], seen["x"] = timestep, hidden_states
            return (noise - x0,)

    models = train_sd3.SD3Models(micro.vae, micro.clip_l, micro.clip_g, Oracle())
    loss = train_sd3.flow_loss(
        models, NullTokenAttention(), pixels, ids, torch.Generator().manual_seed(7)
    )
    assert loss.item() < 1e-12
    assert torch.allclose(seen["t"], t * 1000)
    shaped = t.view(-1, 1, 1, 1)
    assert torch.allclose(seen["x"], (1 - shaped) * x0 + shaped * noise)


def _train(out: Path, *extra: str) -> None:
    main(["--out", str(out), "--micro", "--vae-steps", "2", "--vae-batch-size", "2",
          "--steps", "4", "--batch-size", "2", "--warmup", "2", "--save-every", "100",
          "--log-every", "100", "--eval-samples", "0", "--threads", "1", "--device", "cpu",
          "--fp32", *extra])  # fmt: skip


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    _train(tmp_path / "straight")
    _train(tmp_path / "resumed", "--stop-at", "2")
    assert not (tmp_path / "resumed" / "demo-sd3").exists()
    _train(tmp_path / "resumed")
    for part, name in (("transformer", "diffusion_pytorch_model"), ("text_encoder_2", "model"),
                       ("vae", "diffusion_pytorch_model")):  # fmt: skip
        straight = load_file(tmp_path / "straight" / "demo-sd3" / part / f"{name}.safetensors")
        resumed = load_file(tmp_path / "resumed" / "demo-sd3" / part / f"{name}.safetensors")
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (part, key)
    card = (tmp_path / "straight" / "demo-sd3" / "README.md").read_text()
    assert "python -m nodes.demo.train_sd3" in card and "--stop-at" not in card


def test_the_written_folder_is_a_diffusers_sd3_pipeline_without_t5(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    _train(tmp_path / "run")
    folder = tmp_path / "run" / "demo-sd3"
    pipe = StableDiffusion3Pipeline.from_pretrained(
        folder, text_encoder_3=None, tokenizer_3=None, local_files_only=True
    )
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert pipe.vae.config.scaling_factor != 1.0 and pipe.vae.config.shift_factor != 0.0
    eye = torch.eye(pipe.text_encoder.config.hidden_size)
    assert torch.equal(pipe.text_encoder.text_projection.weight, eye)  # as SD3 uses CLIP-L


def test_the_time_shift_is_the_logit_normal_moved_by_log_shift():
    """t' = s t / (1 + (s - 1) t) is sigmoid(u + log s): the shift moves the logit-normal's
    mean to log s, so far more of the steps land near noise (where a flat background's color
    is decided)."""
    from nodes.demo.train_sd3 import logit_normal

    plain = logit_normal(20000, torch.Generator().manual_seed(1), torch.device("cpu"))
    shifted = logit_normal(20000, torch.Generator().manual_seed(1), torch.device("cpu"), 3.0)
    u = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(plain, torch.sigmoid(u), atol=1e-6)
    assert torch.allclose(shifted, torch.sigmoid(u + math.log(3.0)), atol=1e-5)
    assert (plain > 0.9).float().mean().item() < 0.03  # P(u > 2.197) = 1.4%
    assert (shifted > 0.9).float().mean().item() > 0.1  # P(u > 1.099) = 13.6%


def test_a_run_started_from_a_folder_trains_only_the_flow_stage_from_its_weights(tmp_path):
    from nodes.demo.train_sd3 import load_sd3_folder

    _train(tmp_path / "first")
    first = tmp_path / "first" / "demo-sd3"
    _train(tmp_path / "again", "--init", str(first), "--time-shift", "3", "--stop-at", "1")
    _train(tmp_path / "again", "--init", str(first), "--time-shift", "3",
           "--export", str(tmp_path / "step-1"))  # fmt: skip
    _train(tmp_path / "again", "--init", str(first), "--time-shift", "3")
    start = load_sd3_folder(first, torch.device("cpu"))
    for folder in (tmp_path / "step-1", tmp_path / "again" / "demo-sd3"):
        got = load_sd3_folder(folder, torch.device("cpu"))
        # the VAE (and its measured shift and scale) is the folder's, untouched
        for key, value in start.vae.state_dict().items():
            assert torch.equal(got.vae.state_dict()[key], value), key
        assert got.vae.config.scaling_factor == start.vae.config.scaling_factor
        # the transformer moved, but from the folder's weights, not from a fresh start
        moved = [(got.transformer.state_dict()[k] - v).abs().max().item()
                 for k, v in start.transformer.state_dict().items()]  # fmt: skip
        assert 0 < max(moved) < 0.05
    card = (tmp_path / "again" / "demo-sd3" / "README.md").read_text()
    assert f"started from the weights of `{first}`" in card and "--init" in card
    assert "--export" not in card and "--stop-at" not in card
    with pytest.raises(ValueError, match="no flow-stage state"):
        main(["--out", str(tmp_path / "none"), "--micro", "--export", str(tmp_path / "x")])
