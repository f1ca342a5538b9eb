"""The ModelSamplingDiscrete node (ComfyUI's): a prediction type and zero terminal SNR set on the
model, which both scheduler nodes sample with (Scheduler: diffusers' schedulers; ComfyScheduler:
ComfyUI's KSampler).

The oracle is the model folders' own scheduler configs (``zero_snr_models``): the node on one
tiny copy must sample exactly as the other copy, whose config says what the node sets."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodeflow.builder import WorkflowBuilder
from nodes.families.sd3 import SD3Transformer
from nodes.ksampling.model_sampling import model_sampling_discrete
from nodes.types import UNet

SCHEDULER_NODES = [
    ("Scheduler", {"name": "euler"}),
    ("Scheduler", {"name": "dpmpp_2m"}),
    ("ComfyScheduler", {"sampler_name": "euler", "scheduler": "normal"}),
]


def graph(checkpoint: str, scheduler: tuple[str, dict], sampling: dict | None = None) -> Any:
    """txt2img on ``checkpoint`` with ``scheduler`` (node type, inputs), through a
    ModelSamplingDiscrete with ``sampling`` first when it is given."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    unet = model.unet
    if sampling is not None:
        unet = b.add("ModelSamplingDiscrete", id="sampling", unet=model.unet, **sampling).unet
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text="a red circle")
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text="")
    node_type, inputs = scheduler
    sched = b.add(node_type, id="sched", unet=unet, steps=4, **inputs)
    cfg = b.add("CFG", id="cfg", unet=unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=7.5)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=32, height=32)
    b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
          latent=empty.latent, seed=7)  # fmt: skip
    return b.build()


def latents(make_executor, *args: Any) -> torch.Tensor:
    result = make_executor().run(graph(*args), targets=["denoise"])
    assert result.ok, result.error and result.error.traceback
    samples = result.values["denoise"]["latent"].samples
    assert torch.isfinite(samples).all()
    return samples


@pytest.mark.parametrize(
    "scheduler", SCHEDULER_NODES, ids=lambda s: f"{s[0]}-{next(iter(s[1].values()))}"
)
@pytest.mark.parametrize(
    ("source", "zsnr", "target"),
    [("tiny-vpred", True, "tiny-zsnr"), ("tiny-zsnr", False, "tiny-vpred")],
)
def test_both_scheduler_nodes_sample_as_the_model_config_the_node_sets_says(
    make_zero_snr_executor, scheduler, source, zsnr, target
):
    overridden = latents(
        make_zero_snr_executor, source, scheduler, {"sampling": "v_prediction", "zsnr": zsnr}
    )
    as_configured = latents(make_zero_snr_executor, target, scheduler)
    assert torch.equal(overridden, as_configured)
    # and the setting matters: without the node, the latents differ by 0.084 at most
    # (Scheduler euler; dpmpp_2m 0.13, ComfyScheduler euler 0.10); floor 0.01
    untouched = latents(make_zero_snr_executor, source, scheduler)
    assert float((untouched - as_configured).abs().max()) > 0.01


@pytest.mark.parametrize("scheduler", SCHEDULER_NODES[::2], ids=lambda s: s[0])
def test_eps_sampling_reaches_both_scheduler_nodes(make_zero_snr_executor, scheduler):
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny-zsnr")
    unet = b.add("ModelSamplingDiscrete", id="sampling", unet=model.unet, sampling="eps").unet
    b.add(scheduler[0], id="sched", unet=unet, steps=4, **scheduler[1])
    b.add(scheduler[0], id="plain", unet=model.unet, steps=4, **scheduler[1])
    result = make_zero_snr_executor().run(b.build(), targets=["sched", "plain"])
    assert result.ok, result.error and result.error.traceback
    config = result.values["sched"]["scheduler"].config
    assert config["prediction_type"] == "epsilon" and not config["rescale_betas_zero_snr"]
    plain = result.values["plain"]["scheduler"].config
    assert plain["prediction_type"] == "v_prediction" and plain["rescale_betas_zero_snr"]


@pytest.mark.parametrize(("zsnr", "refused"), [(True, True), (False, False)])
def test_zero_snr_set_by_the_node_refuses_pndm_by_name(make_zero_snr_executor, zsnr, refused):
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny-vpred")
    unet = b.add("ModelSamplingDiscrete", id="sampling", unet=model.unet,
                 sampling="v_prediction", zsnr=zsnr).unet  # fmt: skip
    b.add("Scheduler", id="sched", unet=unet, name="pndm", steps=4)
    result = make_zero_snr_executor().run(b.build(), targets=["sched"])
    assert result.ok is not refused
    if refused:
        assert result.error.node == "sched"
        assert "'pndm' (PNDMScheduler)" in result.error.message
        assert "rescale_betas_zero_snr" in result.error.message


def test_the_model_and_its_config_are_left_as_they_were():
    """zsnr on also spaces the diffusers schedulers' timesteps ``trailing`` (from timestep 999,
    pure noise, where ComfyScheduler's schedules start too); off, the model's spacing stays."""
    config = {"prediction_type": "epsilon", "timestep_spacing": "leading"}
    unet = UNet(model=object(), scheduler_config=config)
    changed = model_sampling_discrete(unet, sampling="v_prediction", zsnr=True)
    assert changed.model is unet.model
    assert changed.scheduler_config == {
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
    }
    assert unet.scheduler_config == {"prediction_type": "epsilon", "timestep_spacing": "leading"}
    off = model_sampling_discrete(unet, sampling="v_prediction", zsnr=False)
    assert off.scheduler_config["timestep_spacing"] == "leading"
    assert off.scheduler_config["rescale_betas_zero_snr"] is False


def test_zero_snr_set_on_an_sd_config_makes_euler_start_at_pure_noise():
    from nodes.schedulers import make_scheduler
    from nodes.tiny import family_config

    unet = UNet(model=None, scheduler_config=family_config("sd1", "scheduler"))
    assert unet.scheduler_config["timestep_spacing"] == "leading"
    changed = model_sampling_discrete(unet, sampling="v_prediction", zsnr=True)
    scheduler = make_scheduler("euler", changed.scheduler_config, 4).create()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 749, 499, 249]
    assert float(scheduler.alphas_cumprod[-1]) <= 2**-24


def test_a_rectified_flow_model_is_refused_with_what_to_use_instead():
    unet = UNet(model=None, scheduler_config={"shift": 3.0}, family=SD3Transformer())
    with pytest.raises(ValueError, match=r"rectified-flow.*FlowShift"):
        model_sampling_discrete(unet, sampling="v_prediction", zsnr=True)
