"""The position probes' levers (``nodes.demo.position_levers``) and their ``train_grow`` options,
on the micro architecture: timesteps biased to the noisy end, a start from another run's saved
state (read only), resumability, and refusal of a resume with changed settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from grow_runs import grow_args, grown_weights, write_micro_v1
from safetensors.torch import load_file

from nodes.demo.position_levers import (
    POSITION_WORDS,
    high_noise_timesteps,
    layout_noise,
    layout_weights,
    load_start_weights,
    spread_token_rows,
)
from nodes.demo.train_demo import (
    ModelSizes,
    build_models,
    diffusion_loss,
    noise_scheduler,
)
from nodes.demo.train_grow import ADDED_LATER, SAME_RUN, GrowRun, main, parse_args


@pytest.fixture(scope="module")
def micro_v1(tmp_path_factory) -> Path:
    """A micro demo model with no attention at level 0, as a diffusers folder (fp32)."""
    return write_micro_v1(tmp_path_factory.mktemp("micro-v1-levers") / "demo-sd")


@pytest.fixture(scope="module")
def saved_run(micro_v1, tmp_path_factory) -> Path:
    """A micro grown run stopped after 3 steps: its ``<out>/state`` is what a probe starts from."""
    out = tmp_path_factory.mktemp("saved-run") / "run"
    main(grow_args(micro_v1, out, "--stop-at", "3", "--ema", "0.9"))
    return out / "state"


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_high_noise_timesteps_put_the_share_asked_for_at_the_noisy_end():
    draw = high_noise_timesteps(20000, 1000, 0.5, 700, torch.Generator().manual_seed(0))
    assert draw.dtype == torch.int64 and draw.min() >= 0 and draw.max() <= 999
    # half from 700..999, half uniform (of which 30% land there too): 65% at the noisy end
    assert abs((draw >= 700).float().mean().item() - 0.65) < 0.02
    assert abs((draw < 350).float().mean().item() - 0.175) < 0.02
    only_noisy = high_noise_timesteps(500, 1000, 1.0, 850, torch.Generator().manual_seed(1))
    assert only_noisy.min() >= 850
    again = high_noise_timesteps(20000, 1000, 0.5, 700, torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)
    with pytest.raises(ValueError, match="share"):
        high_noise_timesteps(4, 1000, 1.5, 700, torch.Generator())
    with pytest.raises(ValueError, match="start"):
        high_noise_timesteps(4, 1000, 0.5, 1000, torch.Generator())


@pytest.mark.parametrize("which", ["train", "ema"])
def test_a_probe_starts_from_the_saved_weights_and_leaves_the_state_as_it_was(
    micro_v1, saved_run, tmp_path, which
):
    before = _digest(saved_run)
    args = parse_args(grow_args(micro_v1, tmp_path / "probe", "--init-state", str(saved_run),
                            "--init-weights", which))  # fmt: skip
    run = GrowRun(args, torch.device("cpu"))
    saved = load_file(saved_run / "state.safetensors")
    if which == "train":
        for name, value in run.models.unet.state_dict().items():
            assert torch.equal(value, saved[f"unet.{name}"]), name
    else:
        for i, param in enumerate(run.parameters):
            assert torch.equal(param.detach(), saved[f"ema.{i}"]), i
        # the EMA differs from the training weights after 3 steps, so this did choose
        trained = {k: v for k, v in saved.items() if k.startswith("unet.")}
        assert any(not torch.equal(trained[f"unet.{k}"], v)
                   for k, v in run.models.unet.state_dict().items())  # fmt: skip
    assert run.started_from == 3 and run.step == 0
    assert _digest(saved_run) == before


def test_a_probe_with_biased_timesteps_resumes_to_the_same_weights(micro_v1, saved_run, tmp_path):
    extra = ("--init-state", str(saved_run), "--high-noise-share", "0.5", "--high-noise-from",
             "800", "--position-share", "1.0", "--layout-weight", "20",
             "--layout-noise", "0.3")  # fmt: skip
    straight = main(grow_args(micro_v1, tmp_path / "straight", *extra))
    assert main(grow_args(micro_v1, tmp_path / "resumed", *extra, "--stop-at", "2")) is None
    main(grow_args(micro_v1, tmp_path / "resumed", *extra))
    a = grown_weights(tmp_path / "straight" / "demo-sd")
    b = grown_weights(tmp_path / "resumed" / "demo-sd")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight is not None and straight["started_from"]["step"] == 3
    # the bias changed what was trained: the same run without it ends elsewhere
    plain = main(grow_args(micro_v1, tmp_path / "plain", *extra[:2], "--position-share", "1.0"))
    assert plain is not None
    c = grown_weights(tmp_path / "plain" / "demo-sd")
    assert any(not torch.equal(a[key], c[key]) for key in a)


def test_a_resume_with_another_start_or_timestep_bias_is_refused(micro_v1, saved_run, tmp_path):
    out = tmp_path / "run"
    main(grow_args(micro_v1, out, "--high-noise-share", "0.5", "--stop-at", "1"))
    with pytest.raises(SystemExit, match=r"--high-noise-share 0\.5 -> 0\.25"):
        main(grow_args(micro_v1, out, "--high-noise-share", "0.25"))
    with pytest.raises(SystemExit, match=r"--init-state None -> "):
        main(grow_args(micro_v1, out, "--high-noise-share", "0.5", "--init-state", str(saved_run)))


def test_a_state_saved_before_these_options_existed_still_resumes(micro_v1, tmp_path):
    out = tmp_path / "old"
    main(grow_args(micro_v1, out, "--stop-at", "2"))
    meta_path = out / "state" / "state.json"
    meta = json.loads(meta_path.read_text())
    for key in ADDED_LATER:
        del meta["args"][key]
    assert set(ADDED_LATER) <= set(SAME_RUN)
    meta_path.write_text(json.dumps(meta))
    assert main(grow_args(micro_v1, out))["step"] == 4
    with pytest.raises(SystemExit, match=r"--high-noise-share 0\.0 -> 0\.5"):
        main(grow_args(micro_v1, out, "--steps", "6", "--high-noise-share", "0.5"))


def test_a_state_of_another_architecture_or_none_is_refused(micro_v1, saved_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved run state"):
        GrowRun(parse_args(grow_args(micro_v1, tmp_path / "a", "--init-state", str(tmp_path))),
                torch.device("cpu"))  # fmt: skip
    models = build_models(ModelSizes.micro(), seed=4)  # not grown: no level-0 attention
    parameters = list(models.unet.parameters())
    with pytest.raises(ValueError, match="does not match this run's architecture"):
        load_start_weights(saved_run, {"unet": models.unet}, parameters, "train")


def test_spread_rows_are_orthogonal_of_the_norm_asked_and_nothing_else_moves():
    encoder = build_models(ModelSizes.micro(), seed=4).text_encoder
    table = encoder.get_input_embeddings().weight
    before = table.detach().clone()
    ids = spread_token_rows(encoder, POSITION_WORDS, 3.0)
    assert ids == [2119, 1823, 1155, 1253, 5931]  # the real CLIP tokenizer's ids
    rows = table[ids].detach().double()
    assert torch.allclose(rows @ rows.T, 9.0 * torch.eye(5, dtype=torch.float64), atol=1e-4)
    # the first keeps its direction, so a learned meaning is not thrown away
    cosine = torch.nn.functional.cosine_similarity(rows[0], before[ids[0]].double(), dim=0)
    assert cosine > 0.999
    others = torch.ones(table.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.equal(table.detach()[others], before[others])
    with pytest.raises(ValueError, match="not one"):
        spread_token_rows(encoder, ["on the left"], 3.0)
    with pytest.raises(ValueError, match="positive"):
        spread_token_rows(encoder, ["left"], 0.0)


def test_spread_rows_let_the_demo_encoder_tell_positions_apart(micro_v1, tmp_path):
    """On the micro run, ``--spread-position-tokens`` is applied at the start and raises the
    encoder's separation of the position phrases (``text_probe``) well above what it was."""
    from nodes.demo.text_probe import attribute_separation

    run = GrowRun(parse_args(grow_args(micro_v1, tmp_path / "a")), torch.device("cpu"))
    spread_args = grow_args(micro_v1, tmp_path / "b", "--spread-position-tokens", "8")
    spread = GrowRun(parse_args(spread_args), torch.device("cpu"))
    plain = attribute_separation(run.models.text_encoder.eval())["position"]
    wide = attribute_separation(spread.models.text_encoder.eval())["position"]
    assert wide > 1.4 * plain  # the untrained micro encoder already keeps 43%; 8 lifts it to 71%
    assert spread.ema is not None  # the EMA starts from the spread rows too
    ids = [1823, 1155]
    shadow = dict(zip(map(id, spread.parameters), spread.ema.shadow, strict=True))
    table = spread.models.text_encoder.get_input_embeddings().weight
    assert torch.allclose(shadow[id(table)][ids].norm(dim=1), torch.tensor([8.0, 8.0]))


def test_layout_weights_count_the_noisy_end_as_the_picture_error_there_costs():
    alphas = noise_scheduler().alphas_cumprod
    weights = layout_weights(torch.tensor([0, 300, 500, 700, 999]), alphas, 20.0)
    snr = alphas[500] / (1 - alphas[500])
    assert weights[0] == 1 and weights[1] == 1  # SNR above 1: as before
    assert torch.isclose(weights[2], (1 / snr).float(), rtol=1e-5)  # 1/SNR between
    assert 10 < weights[3] < 12 and weights[4] == 20  # capped at the noisiest
    with pytest.raises(ValueError, match="at least 1"):
        layout_weights(torch.tensor([5]), alphas, 0.5)


def test_sample_weights_scale_each_pictures_loss_and_none_changes_nothing():
    models = build_models(ModelSizes.micro(), seed=3)
    scheduler = noise_scheduler()
    pixels, ids = torch.rand(2, 3, 32, 32) * 2 - 1, torch.full((2, 77), 49407)
    timesteps = torch.tensor([100, 900])

    def loss(weights):
        return diffusion_loss(models, scheduler, pixels, ids, timesteps=timesteps,
                              generator=torch.Generator().manual_seed(0),
                              sample_weights=weights)  # fmt: skip

    plain, ones = loss(None), loss(torch.ones(2))
    assert torch.equal(plain, ones)
    first, second = loss(torch.tensor([2.0, 0.0])), loss(torch.tensor([0.0, 2.0]))
    assert torch.isclose(first + second, 2 * plain)
    assert not torch.isclose(first, second)


def test_layout_noise_adds_coarse_fields_of_the_strength_asked():
    shape = (512, 4, 16, 16)
    noise = layout_noise(shape, 0.4, torch.Generator().manual_seed(0))
    white = layout_noise(shape, 0.0, torch.Generator().manual_seed(0))
    assert noise.shape == shape
    assert abs(white.std().item() - 1) < 0.01  # strength 0: plain Gaussian noise
    # three coarse fields of 0.4 each: variance 1 + 3 * 0.16
    assert abs(noise.var().item() - 1.48) < 0.03
    # the coarse part is what moves the 4x4 blocks' means (white noise alone: 1/16)
    blocks = torch.nn.functional.avg_pool2d(noise, 4)
    assert abs(blocks.var().item() - (1 / 16 + 0.48)) < 0.03
    again = layout_noise(shape, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(noise, again)
    small = layout_noise((2, 4, 2, 2), 0.4, torch.Generator().manual_seed(0))  # no 4x4 grid
    assert small.shape == (2, 4, 2, 2)
    with pytest.raises(ValueError, match="at least 0"):
        layout_noise(shape, -0.1, torch.Generator())


def test_given_noise_is_what_the_loss_trains_against():
    models = build_models(ModelSizes.micro(), seed=3)
    scheduler = noise_scheduler()
    pixels, ids = torch.rand(2, 3, 32, 32) * 2 - 1, torch.full((2, 77), 49407)
    latent_shape = (2, models.vae.config.latent_channels, 16, 16)
    timesteps = torch.tensor([100, 900])

    def loss(noise):
        return diffusion_loss(models, scheduler, pixels, ids, timesteps=timesteps, noise=noise,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip

    zeros, ones = loss(torch.zeros(latent_shape)), loss(torch.ones(latent_shape))
    assert not torch.isclose(zeros, ones)
    with pytest.raises(ValueError, match="noise of shape"):
        loss(torch.zeros(2, 4, 8, 8))
