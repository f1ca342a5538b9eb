"""T2I-Adapters through LoadControlNet and ApplyControlNet, against diffusers' adapter pipelines
(fp32, CPU, <= 1e-4 on the float image), on tiny adapters of the tiny models; their files in both
layouts; chaining with a ControlNet; refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pixels import assert_same_pixels
from test_controlnet import assert_close, control_graph, run_image
from test_parity import reference_scheduler

PROMPT, NEGATIVE, SEED, STEPS = "a red circle", "blue", 5, 4


@pytest.fixture(scope="module")
def adapters(models_dir: Path) -> dict[str, Path]:
    """A tiny SD 1.x model in SD's block order (``tiny-sdo``), random adapters for it and for
    tiny-sdxl as folders, the first also as files in TencentARC's and diffusers' layouts."""
    from nodes.tiny_adapter import make_tiny_adapter, make_tiny_sd_adapter_model, write_adapter_file

    make_tiny_sd_adapter_model(models_dir / "checkpoints" / "tiny-sdo", seed=0)
    folder = models_dir / "controlnet"
    made = {
        "sd": make_tiny_adapter(folder / "adapter-sd", family="sd1", seed=1),
        "grey": make_tiny_adapter(folder / "adapter-grey", family="sd1", seed=2, in_channels=1),
        "xl": make_tiny_adapter(folder / "adapter-xl", family="sdxl", seed=3),
    }
    made["sd-original"] = write_adapter_file(made["sd"], folder / "adapter-sd.safetensors")
    made["sd-diffusers"] = write_adapter_file(
        made["sd"], folder / "adapter-sd-diffusers.safetensors", original=False
    )
    return made


@pytest.fixture(scope="module")
def control_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 64x64 control pictures: a white ring and a grey bar (a one-channel adapter's
    picture is read as grey) on black."""
    folder = tmp_path_factory.mktemp("adapter-images")
    yy, xx = np.mgrid[0:64, 0:64]
    ring = (np.abs(np.hypot(yy - 30, xx - 34) - 18) < 3).astype(np.uint8) * 255
    bar = ((np.abs(xx - 20) < 5) & (yy > 8)).astype(np.uint8) * 180
    paths = {}
    for name, grey in (("ring", ring), ("bar", bar)):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(paths[name])
    return paths


def adapter_pipeline(pipeline_class, model: Path, adapter: Path):
    from diffusers import T2IAdapter

    loaded = T2IAdapter.from_pretrained(adapter, local_files_only=True)
    pipeline = pipeline_class.from_pretrained(model, adapter=loaded, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = reference_scheduler(pipeline, "euler")
    return pipeline


def expected_pixels(pipeline, image: Path, **settings) -> np.ndarray:
    with Image.open(image) as picture:
        control = picture.convert(settings.pop("mode", "RGB"))
    return pipeline(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=control,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="np",
        **settings,
    ).images


def adapter_graph(checkpoint: str, *controls: dict) -> object:
    return control_graph(checkpoint=checkpoint, controls=list(controls), prompt=PROMPT,
                         negative=NEGATIVE, seed=SEED, steps=STEPS)  # fmt: skip


def test_an_adapter_equals_stable_diffusion_adapter_pipeline(
    models_dir, make_executor, adapters, control_images
):
    from diffusers import StableDiffusionAdapterPipeline

    model = models_dir / "checkpoints" / "tiny-sdo"
    pipeline = adapter_pipeline(StableDiffusionAdapterPipeline, model, adapters["sd"])
    ring = control_images["ring"]
    expected = expected_pixels(pipeline, ring, adapter_conditioning_scale=0.7)
    control = {"path": str(adapters["sd"]), "image": str(ring), "strength": 0.7}
    actual = run_image(make_executor, adapter_graph("tiny-sdo", control))
    assert_close(actual, expected)
    plain = run_image(make_executor, adapter_graph("tiny-sdo"))
    assert np.abs(actual - plain).max() > 1e-2  # the adapter acts


def test_a_one_channel_adapter_reads_a_grey_picture_as_diffusers_reads_it(
    models_dir, make_executor, adapters, control_images
):
    from diffusers import StableDiffusionAdapterPipeline

    model = models_dir / "checkpoints" / "tiny-sdo"
    pipeline = adapter_pipeline(StableDiffusionAdapterPipeline, model, adapters["grey"])
    bar = control_images["bar"]
    expected = expected_pixels(pipeline, bar, mode="L")
    actual = run_image(make_executor, adapter_graph("tiny-sdo", {"path": str(adapters["grey"]),
                                                                  "image": str(bar)}))  # fmt: skip
    assert_close(actual, expected)


def test_an_sdxl_adapter_with_a_conditioning_factor_equals_the_sdxl_adapter_pipeline(
    models_dir, make_executor, adapters, control_images
):
    """diffusers' ``adapter_conditioning_factor`` f acts on steps i < int(steps * f): the
    window from start 0 to end f."""
    from diffusers import StableDiffusionXLAdapterPipeline

    model = models_dir / "checkpoints" / "tiny-sdxl"
    pipeline = adapter_pipeline(StableDiffusionXLAdapterPipeline, model, adapters["xl"])
    ring = control_images["ring"]
    expected = expected_pixels(pipeline, ring, adapter_conditioning_scale=1.3,
                               adapter_conditioning_factor=0.5)  # fmt: skip
    control = {"path": str(adapters["xl"]), "image": str(ring), "strength": 1.3, "end": 0.5}
    actual = run_image(make_executor, adapter_graph("tiny-sdxl", control))
    assert_close(actual, expected)
    whole = run_image(make_executor, adapter_graph("tiny-sdxl", {**control, "end": 1.0}))
    assert np.abs(actual - whole).max() > 1e-3  # the window matters


@pytest.mark.parametrize("layout", ["sd-original", "sd-diffusers"])
def test_an_adapter_file_in_either_layout_loads_as_its_folder(
    make_executor, adapters, control_images, layout
):
    ring = str(control_images["ring"])
    folder = run_image(make_executor, adapter_graph("tiny-sdo", {"path": str(adapters["sd"]),
                                                                 "image": ring}))  # fmt: skip
    single = run_image(make_executor, adapter_graph("tiny-sdo", {"path": str(adapters[layout]),
                                                                 "image": ring}))  # fmt: skip
    assert_same_pixels(single, folder)


def test_the_file_layouts_give_the_folder_config(adapters):
    from diffusers import T2IAdapter

    from nodes.controlnet_loader import load_controlnet_at

    reference = T2IAdapter.from_pretrained(adapters["sd"], local_files_only=True).config
    for layout in ("sd-original", "sd-diffusers"):
        net = load_controlnet_at(adapters[layout], torch.float32, allow_pickle=False)
        assert (net.kind, net.family) == ("t2i_adapter", "sd1")
        for key in ("in_channels", "channels", "num_res_blocks", "downscale_factor"):
            assert net.model.config[key] == reference[key], key


def test_an_adapter_chains_with_a_controlnet(models_dir, make_executor, adapters, control_images):
    """Both act in one U-Net call (the ControlNet's residuals on the skips, the adapter's in the
    down blocks); an adapter at strength 0 adds zeros, leaving the ControlNet's pixels."""
    from nodes.tiny_controlnet import make_tiny_controlnet

    model = models_dir / "checkpoints" / "tiny-sdo"
    net = make_tiny_controlnet(model, models_dir / "controlnet" / "tiny-sdo-net", seed=4)
    ring, bar = str(control_images["ring"]), str(control_images["bar"])
    control = {"path": str(net), "image": bar}
    adapter = {"path": str(adapters["sd"]), "image": ring}
    both = run_image(make_executor, adapter_graph("tiny-sdo", control, adapter))
    alone = run_image(make_executor, adapter_graph("tiny-sdo", control))
    only_adapter = run_image(make_executor, adapter_graph("tiny-sdo", adapter))
    quiet = {**adapter, "strength": 0.0}
    silent = run_image(make_executor, adapter_graph("tiny-sdo", control, quiet))
    assert_same_pixels(silent, alone)
    assert np.abs(both - alone).max() > 1e-2 and np.abs(both - only_adapter).max() > 1e-2


def test_an_adapter_of_another_family_is_refused_naming_both(
    make_executor, adapters, control_images
):
    control = {"path": str(adapters["xl"]), "image": str(control_images["ring"])}
    result = make_executor().run(adapter_graph("tiny-sdo", control), targets=["decode"])
    assert not result.ok and result.error.node == "cfg"
    assert "T2I-Adapter" in result.error.message and "sdxl" in result.error.message
    assert "sd1" in result.error.message


def test_a_comfyui_workflow_loading_an_adapter_with_controlnetloader_imports_and_steers(
    models_dir, make_executor, adapters, control_images, tmp_path
):
    """ComfyUI loads T2I-Adapters with ControlNetLoader; the importer's LoadControlNet does too,
    so an imported ControlNetApplyAdvanced graph runs the adapter."""
    import shutil

    from nodeflow.imports import load_document
    from nodeflow.plugins import load_catalog

    (tmp_path / "input").mkdir(exist_ok=True)
    shutil.copy(control_images["ring"], tmp_path / "input" / "ring.png")

    def prompt(strength: float) -> dict:
        return {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdo"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage",
                  "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "adapter-sd"}},
            "21": {"class_type": "LoadImage", "inputs": {"image": "ring.png"}},
            "22": {"class_type": "ControlNetApplyAdvanced",
                   "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0],
                              "image": ["21", 0], "strength": strength, "start_percent": 0.0,
                              "end_percent": 1.0}},
            "3": {"class_type": "KSampler",
                  "inputs": {"model": ["4", 0], "seed": SEED, "steps": STEPS, "cfg": 7.5,
                             "sampler_name": "euler", "scheduler": "normal",
                             "positive": ["22", 0], "negative": ["22", 1],
                             "latent_image": ["5", 0], "denoise": 1.0}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        }  # fmt: skip

    pictures = []
    for strength in (0.0, 1.0):
        workflow = load_document(prompt(strength), load_catalog().loaders).workflow
        assert workflow.to_json()["nodes"]["20"]["type"] == "LoadControlNet"
        result = make_executor().run(workflow, targets=["20", "8"])
        assert result.ok, result.error and result.error.traceback
        assert result.values["20"]["control_net"].kind == "t2i_adapter"
        pictures.append(result.values["8"]["image"].pixels.numpy())
    assert np.abs(pictures[1] - pictures[0]).max() > 1e-2  # the imported adapter steers
