"""ControlNet: nodeflow against diffusers' ControlNet pipelines, on tiny ControlNets of the tiny
models (fp32, CPU, <= 1e-4 on the float image), and the loader's formats and refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_parity import TOLERANCE, diffusers_image, reference_scheduler

from nodeflow.builder import WorkflowBuilder


@pytest.fixture(scope="module")
def controlnets(models_dir: Path) -> dict[str, Path]:
    """Two random ControlNets of tiny (SD 1.x) and one of tiny-sdxl, as folders, plus the first
    as single files in the original and the diffusers layout."""
    from nodes.tiny_controlnet import make_tiny_controlnet, write_controlnet_file

    checkpoints, folder = models_dir / "checkpoints", models_dir / "controlnet"
    made = {
        "a": make_tiny_controlnet(checkpoints / "tiny", folder / "tiny-a", seed=1),
        "b": make_tiny_controlnet(checkpoints / "tiny", folder / "tiny-b", seed=2),
        "xl": make_tiny_controlnet(checkpoints / "tiny-sdxl", folder / "tiny-xl", seed=3),
    }
    made["a-original"] = write_controlnet_file(made["a"], folder / "tiny-a.safetensors")
    made["a-diffusers"] = write_controlnet_file(
        made["a"], folder / "tiny-a-diffusers.safetensors", original=False
    )
    made["xl-original"] = write_controlnet_file(made["xl"], folder / "tiny-xl.safetensors")
    return made


@pytest.fixture(scope="module")
def control_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two control pictures: a white ring and a white bar on black, 64x64."""
    folder = tmp_path_factory.mktemp("control-images")
    yy, xx = np.mgrid[0:64, 0:64]
    ring = (np.abs(np.hypot(yy - 30, xx - 34) - 18) < 3).astype(np.uint8) * 255
    bar = ((np.abs(xx - 20) < 5) & (yy > 8)).astype(np.uint8) * 255
    paths = {}
    for name, mask in (("ring", ring), ("bar", bar)):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(np.stack([mask] * 3, axis=-1)).save(paths[name])
    return paths


def control_graph(
    *,
    checkpoint: str = "tiny",
    controls: list[dict[str, Any]],
    prompt: str = "a red circle",
    negative: str = "",
    seed: int = 0,
    steps: int = 4,
    scale: float = 7.5,
    strength: float = 1.0,
    init_image: str | None = None,
) -> Any:
    """txt2img (img2img with ``init_image``) with ApplyControlNet nodes chained in order; each
    control: path, image (an absolute path), strength, start, end."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=negative)
    positive, negative_ = pos.conditioning, neg.conditioning
    for index, control in enumerate(controls):
        net = b.add("LoadControlNet", id=f"net{index}", path=control["path"])
        image = b.add("LoadImage", id=f"hint{index}", path=control["image"])
        applied = b.add(
            "ApplyControlNet",
            id=f"apply{index}",
            positive=positive,
            negative=negative_,
            control_net=net.control_net,
            image=image.image,
            strength=control.get("strength", 1.0),
            start=control.get("start", 0.0),
            end=control.get("end", 1.0),
        )
        positive, negative_ = applied.positive, applied.negative
    sched = b.add("Scheduler", id="sched", unet=model.unet, name="euler", steps=steps)
    guider = b.add(
        "CFG", id="cfg", unet=model.unet, positive=positive, negative=negative_, scale=scale
    )
    if init_image is None:
        latent = b.add("EmptyLatent", id="empty", width=64, height=64).latent
    else:
        loaded = b.add("LoadImage", id="init", path=init_image)
        latent = b.add("VAEEncode", id="encode", vae=model.vae, image=loaded.image).latent
    den = b.add(
        "Denoise",
        id="denoise",
        guider=guider.guider,
        scheduler=sched.scheduler,
        latent=latent,
        seed=seed,
        strength=strength,
    )
    b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    return b.build()


def run_image(make_executor, workflow) -> np.ndarray:
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def load_net(path: Path) -> Any:
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(path, local_files_only=True)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = float(np.abs(actual - expected).max())
    assert diff <= TOLERANCE, f"max |difference| {diff:.3g} > {TOLERANCE}"


def sd_control_pipe(pipe, nets) -> Any:
    from diffusers import StableDiffusionControlNetPipeline

    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    pipeline = StableDiffusionControlNetPipeline(**components, controlnet=nets)
    pipeline.scheduler = reference_scheduler(pipe, "euler")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_one_controlnet_in_a_window_equals_the_diffusers_pipeline(
    pipe, make_executor, controlnets, control_images
):
    settings = {"prompt": "a red circle", "negative": "blue", "seed": 5, "steps": 4}
    expected = diffusers_image(
        sd_control_pipe(pipe, load_net(controlnets["a"])),
        seed=5,
        prompt="a red circle",
        negative_prompt="blue",
        image=Image.open(control_images["ring"]),
        num_inference_steps=4,
        guidance_scale=7.5,
        width=64,
        height=64,
        controlnet_conditioning_scale=0.8,
        control_guidance_start=0.25,
        control_guidance_end=0.75,
    )
    control = {"path": "tiny-a", "image": str(control_images["ring"]), "strength": 0.8,
               "start": 0.25, "end": 0.75}  # fmt: skip
    actual = run_image(make_executor, control_graph(controls=[control], **settings))
    assert_close(actual, expected)
    plain = run_image(make_executor, control_graph(controls=[], **settings))
    assert float(np.abs(plain - actual).max()) > 1e-2, "the ControlNet changed nothing"


def test_two_controlnets_with_windows_equal_the_diffusers_multi_controlnet(
    pipe, make_executor, controlnets, control_images
):
    expected = diffusers_image(
        sd_control_pipe(pipe, [load_net(controlnets["a"]), load_net(controlnets["b"])]),
        seed=11,
        prompt="two yellow squares",
        negative_prompt="",
        image=[Image.open(control_images["ring"]), Image.open(control_images["bar"])],
        num_inference_steps=5,
        guidance_scale=6.0,
        width=64,
        height=64,
        controlnet_conditioning_scale=[1.0, 0.6],
        control_guidance_start=[0.0, 0.4],
        control_guidance_end=[0.6, 1.0],
    )
    controls = [
        {"path": "tiny-a", "image": str(control_images["ring"]), "start": 0.0, "end": 0.6},
        {"path": "tiny-b", "image": str(control_images["bar"]), "strength": 0.6, "start": 0.4},
    ]
    workflow = control_graph(
        controls=controls, prompt="two yellow squares", seed=11, steps=5, scale=6.0
    )
    assert_close(run_image(make_executor, workflow), expected)


def test_controlnet_img2img_equals_the_diffusers_pipeline(
    pipe, make_executor, controlnets, control_images
):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    pipeline = StableDiffusionControlNetImg2ImgPipeline(
        **components, controlnet=load_net(controlnets["b"])
    )
    pipeline.scheduler = reference_scheduler(pipe, "euler")
    pipeline.set_progress_bar_config(disable=True)
    expected = diffusers_image(
        pipeline,
        seed=3,
        prompt="a green square",
        negative_prompt="",
        image=Image.open(control_images["ring"]),
        control_image=Image.open(control_images["bar"]),
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=7.5,
        controlnet_conditioning_scale=0.7,
    )
    control = {"path": "tiny-b", "image": str(control_images["bar"]), "strength": 0.7}
    workflow = control_graph(
        controls=[control], prompt="a green square", seed=3, steps=5, strength=0.6,
        init_image=str(control_images["ring"]),
    )  # fmt: skip
    assert_close(run_image(make_executor, workflow), expected)


def test_sdxl_controlnet_equals_the_diffusers_pipeline(
    make_executor, models_dir, controlnets, control_images
):
    from diffusers import StableDiffusionXLControlNetPipeline

    pipeline = StableDiffusionXLControlNetPipeline.from_pretrained(
        models_dir / "checkpoints" / "tiny-sdxl",
        controlnet=load_net(controlnets["xl"]),
        local_files_only=True,
    )
    pipeline.set_progress_bar_config(disable=True)
    expected = diffusers_image(
        pipeline,
        seed=7,
        prompt="a red circle",
        negative_prompt="",
        image=Image.open(control_images["ring"]),
        num_inference_steps=3,
        guidance_scale=5.0,
        width=64,
        height=64,
        controlnet_conditioning_scale=0.9,
        control_guidance_end=0.8,
    )
    control = {"path": "tiny-xl", "image": str(control_images["ring"]), "strength": 0.9,
               "end": 0.8}  # fmt: skip
    workflow = control_graph(checkpoint="tiny-sdxl", controls=[control], seed=7, steps=3, scale=5.0)
    assert_close(run_image(make_executor, workflow), expected)


@pytest.mark.parametrize(
    "name, folder_name, family",
    [
        ("tiny-a.safetensors", "tiny-a", "sd1"),
        ("tiny-a-diffusers.safetensors", "tiny-a", "sd1"),
        ("tiny-xl.safetensors", "tiny-xl", "sdxl"),
    ],
)
def test_a_single_file_controlnet_loads_the_same_weights_as_its_folder(
    make_executor, controlnets, name, folder_name, family
):
    b = WorkflowBuilder()
    b.add("LoadControlNet", id="folder", path=folder_name)
    b.add("LoadControlNet", id="file", path=name)
    result = make_executor().run(b.build(), targets=["folder", "file"])
    assert result.ok, result.error and result.error.traceback
    folder = result.values["folder"]["control_net"]
    file = result.values["file"]["control_net"]
    assert file.family == folder.family == family
    expected, actual = folder.model.state_dict(), file.model.state_dict()
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key

    def architecture(model: Any) -> dict[str, Any]:
        return {k: v for k, v in model.config.items() if not k.startswith("_")}

    assert architecture(file.model) == architecture(folder.model)


def test_the_original_layout_matches_diffusers_own_converter(tiny_path):
    """Our original-layout names are what diffusers' single-file converter reads back as the
    same weights (an oracle independent of our renaming). Its converter knows only the real
    control-image encoder (eight convolutions), so this ControlNet has that one."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from nodes.controlnet_layout import controlnet_to_diffusers, controlnet_to_original

    unet = UNet2DConditionModel.from_pretrained(tiny_path / "unet", local_files_only=True)
    net = ControlNetModel.from_unet(unet)
    expected = net.state_dict()
    original = controlnet_to_original(expected)
    assert all(key.startswith("control_model.") for key in original)
    for converted in (
        convert_controlnet_checkpoint(dict(original), dict(net.config)),
        controlnet_to_diffusers(original),
    ):
        assert converted.keys() == expected.keys()
        for key, tensor in expected.items():
            assert converted[key] is tensor, key


def test_a_controlnet_of_another_family_is_refused_naming_both(
    make_executor, controlnets, control_images
):
    control = {"path": "tiny-xl", "image": str(control_images["ring"])}
    result = make_executor().run(control_graph(controls=[control]), targets=["decode"])
    assert not result.ok
    assert result.error.node == "cfg"
    assert "made for sdxl models" in result.error.message
    assert "this U-Net is sd1" in result.error.message


def test_without_cfg_the_controlnet_equals_the_diffusers_pipeline_at_scale_1(
    pipe, make_executor, controlnets, control_images
):
    expected = diffusers_image(
        sd_control_pipe(pipe, load_net(controlnets["a"])),
        seed=2,
        prompt="a blue square",
        image=Image.open(control_images["bar"]),
        num_inference_steps=3,
        guidance_scale=1.0,
        width=64,
        height=64,
        control_guidance_start=0.3,
    )
    control = {"path": "tiny-a", "image": str(control_images["bar"]), "start": 0.3}
    workflow = control_graph(controls=[control], prompt="a blue square", seed=2, steps=3, scale=1)
    assert_close(run_image(make_executor, workflow), expected)


def test_a_control_on_one_prompt_only_leaves_the_other_rows_alone(controlnets, control_images):
    """ComfyUI lets a control steer the positive prompt alone: its residuals are the
    ControlNet's own on the positive rows and zero on the negative ones."""
    from nodes.attention import Sampling
    from nodes.control import ControlApplication, ControlNet, control_run
    from nodes.types import Conditioning

    net = load_net(controlnets["a"])
    picture = np.asarray(Image.open(control_images["ring"]), dtype=np.float32) / 255
    image = torch.from_numpy(picture).permute(2, 0, 1)[None]
    control = ControlApplication(ControlNet(net, "sd1"), image, strength=0.7)
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(2, 77, 32, generator=generator)
    negative, positive = Conditioning(embeds[:1]), Conditioning(embeds[1:], controls=(control,))
    latents = torch.randn(1, 4, 32, 32, generator=generator)
    run = control_run([negative, positive], latents, 2, Sampling(steps=4))
    sample, timestep = torch.cat([latents, latents * 0.5]), torch.tensor(500)
    with torch.inference_mode():
        found = run.residuals(sample, timestep, {"encoder_hidden_states": embeds})
        down, mid = net(
            sample[1:],
            timestep,
            encoder_hidden_states=embeds[1:],
            controlnet_cond=image,
            conditioning_scale=0.7,
            return_dict=False,
        )
    for ours, theirs in zip([*found.down, found.mid], [*down, mid], strict=True):
        assert not ours[0].any()
        assert torch.allclose(ours[1:], theirs, atol=1e-4, rtol=0)  # batch of 2 against 1
        assert theirs.abs().max() > 1e-3


def test_a_window_that_never_opens_is_refused():
    from nodes.controlnet import apply_controlnet
    from nodes.types import Conditioning
    from nodes.types import Image as Picture

    empty = Conditioning(None)
    with pytest.raises(ValueError, match="start"):
        apply_controlnet(empty, empty, None, Picture(torch.zeros(1, 8, 8, 3)), start=0.5, end=0.5)
