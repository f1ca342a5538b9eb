"""The v2 trainer (``nodes.demo.train_grow``) on the micro architecture: step 0 is the model it
grew from, an interrupted run resumes to the same weights, a resume with other settings is
refused, and its checkpoints are measured through nodeflow's graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from grow_runs import grow_args, grown_weights, write_micro_v1

from nodes.demo.train_demo import ModelSizes, build_models
from nodes.demo.train_grow import GrowRun, main, parse_args


@pytest.fixture(scope="module")
def micro_v1(tmp_path_factory) -> Path:
    """A micro demo model with no attention at level 0, as a diffusers folder (fp32)."""
    return write_micro_v1(tmp_path_factory.mktemp("micro-v1") / "demo-sd")


def test_step_zero_is_the_model_it_grew_from(micro_v1, tmp_path):
    run = GrowRun(parse_args(grow_args(micro_v1, tmp_path / "run")), torch.device("cpu"))
    v1 = build_models(ModelSizes.micro(), seed=4)
    latents, context = torch.randn(1, 4, 32, 32), torch.randn(1, 77, 8)
    with torch.no_grad():
        expected = v1.unet.eval()(latents, torch.tensor([400]), context).sample
        got = run.models.unet.eval()(latents, torch.tensor([400]), context).sample
    assert torch.equal(got, expected)
    assert run.models.vae.config.scaling_factor == 0.5  # the VAE is v1's, kept


def test_an_interrupted_run_resumes_to_the_same_weights(micro_v1, tmp_path):
    straight = main(grow_args(micro_v1, tmp_path / "straight"))
    assert main(grow_args(micro_v1, tmp_path / "resumed", "--stop-at", "2")) is None
    assert not (tmp_path / "resumed" / "demo-sd").exists()
    assert json.loads((tmp_path / "resumed" / "state" / "state.json").read_text())["step"] == 2
    main(grow_args(micro_v1, tmp_path / "resumed"))
    a = grown_weights(tmp_path / "straight" / "demo-sd")
    b = grown_weights(tmp_path / "resumed" / "demo-sd")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # it trained: the new attention left the identity, and the old weights moved
    assert a["down_blocks.0.attentions.0.proj_out.weight"].abs().max().item() > 0
    v1 = grown_weights(micro_v1)
    assert not torch.equal(a["conv_in.weight"], v1["conv_in.weight"])
    assert straight is not None and straight["step"] == 4
    card = (tmp_path / "straight" / "demo-sd" / "README.md").read_text()
    assert "python -m nodes.demo.train_grow" in card and "--stop-at" not in card


def test_a_resume_with_other_settings_is_refused(micro_v1, tmp_path):
    main(grow_args(micro_v1, tmp_path / "run", "--stop-at", "1"))
    with pytest.raises(SystemExit, match=r"--position-share 0\.5 -> 0\.9"):
        main(grow_args(micro_v1, tmp_path / "run", "--position-share", "0.9"))


def test_checkpoints_are_measured_on_held_out_and_positioned_captions(micro_v1, tmp_path):
    out = tmp_path / "run"
    main(grow_args(micro_v1, out, "--steps", "2", "--eval-every", "1", "--eval-samples", "2",
               "--eval-positioned", "2", "--eval-cfg", "4"))  # fmt: skip
    records = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # every --eval-every, and the final model
    assert records[0]["pictures"] == 4
    figures = records[0]["4"]
    assert set(figures) == {"held_out", "positioned"}
    assert figures["positioned"]["position_ok"] is not None  # every one of them names a place
    assert 0 <= figures["held_out"]["color_ok"] <= 1
    assert set(records[0]["text_separation"]) == {"position", "color"}
    assert (out / "checkpoints" / "step-000001" / "unet").is_dir()
    assert "| 2 | 4 |" in (out / "demo-sd" / "README.md").read_text()


def test_the_summary_command_parses_back_to_the_run_settings(micro_v1, tmp_path):
    """The model card's command must rerun the run: list options (``--attention-levels``,
    ``--eval-cfg``) come back as lists, not as one ``"[0]"`` word."""
    argv = [*grow_args(micro_v1, tmp_path / "run"), "--eval-cfg", "4", "7.5"]
    run = GrowRun(parse_args(argv), torch.device("cpu"))
    words = run.summary()["command"].split()
    assert words[:3] == ["python", "-m", "nodes.demo.train_grow"]
    again = parse_args(words[3:])
    assert again.attention_levels == [0] and again.eval_cfg == [4.0, 7.5]
    assert vars(again) == vars(run.args) | {"stop_at": None}


def test_a_v_zero_snr_run_ships_its_schedule_and_samples_as_diffusers_does(
    micro_v1, tmp_path, sd_catalog, runtime
):
    """``--objective v-zero-snr``: the folder's scheduler config carries the objective, so
    nodeflow's graph and diffusers' pipeline both sample the schedule it was trained on, and
    agree on the pixels; an epsilon run cannot be resumed as one."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from pixels import assert_same_pixels
    from sdgraphs import sd_graph

    from nodeflow.context import Environment
    from nodeflow.executor import Executor

    main(grow_args(micro_v1, tmp_path / "eps", "--stop-at", "1"))
    with pytest.raises(SystemExit, match="--objective epsilon -> v-zero-snr"):
        main(grow_args(micro_v1, tmp_path / "eps", "--objective", "v-zero-snr"))
    summary = main(grow_args(micro_v1, tmp_path / "v", "--objective", "v-zero-snr"))
    assert summary is not None and summary["args"]["objective"] == "v-zero-snr"
    folder = tmp_path / "v" / "demo-sd"
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDIMScheduler"
    assert config["prediction_type"] == "v_prediction" and config["rescale_betas_zero_snr"]
    assert config["timestep_spacing"] == "trailing"

    pipe = StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, torch_dtype=torch.float32
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler.set_timesteps(4)
    assert int(pipe.scheduler.timesteps[0]) == 999  # trailing: sampling starts at SNR 0
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        "a red circle", num_inference_steps=4, guidance_scale=7.5, width=32, height=32,
        generator=torch.Generator("cpu").manual_seed(3), output_type="np",
    ).images  # fmt: skip
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    graph = sd_graph(checkpoint=str(folder), prompt="a red circle", seed=3, steps=4,
                     width=32, height=32, save=False)  # fmt: skip
    result = Executor(sd_catalog, env=env, runtime=runtime).run(graph, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    assert_same_pixels(result.values["decode"]["image"].pixels.numpy(), expected)


def test_v_gamma_is_for_a_v_run_and_part_of_the_run_s_identity(micro_v1, tmp_path):
    with pytest.raises(SystemExit):
        parse_args(grow_args(micro_v1, tmp_path / "eps", "--v-gamma", "5"))
    main(grow_args(micro_v1, tmp_path / "v", "--objective", "v-zero-snr", "--stop-at", "1"))
    with pytest.raises(SystemExit, match=r"--v-gamma None -> 5\.0"):
        main(grow_args(micro_v1, tmp_path / "v", "--objective", "v-zero-snr", "--v-gamma", "5"))
