"""unCLIP: the prior, image-embedding conditioning and their decoders, against diffusers.

The oracles are ``KandinskyV22PriorPipeline`` (+ ``KandinskyV22Pipeline``) and
``StableUnCLIPPipeline`` on tiny models written in their real folder layouts (fp32, CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pixels import assert_same_pixels
from test_parity import REFERENCE_SCHEDULERS, TOLERANCE

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow

ASSET = Path(__file__).resolve().parents[2] / "nodes" / "assets" / "red-circle.png"
MAX_DIFFS: dict[str, float] = {}


@pytest.fixture(scope="module")
def unclip_models(models_dir: Path) -> Path:
    from nodes.tiny_unclip import (
        make_tiny_kandinsky_decoder,
        make_tiny_kandinsky_prior,
        make_tiny_stable_unclip,
    )

    checkpoints = models_dir / "checkpoints"
    for name, make in (
        ("tiny-kandinsky-prior", make_tiny_kandinsky_prior),
        ("tiny-kandinsky-decoder", make_tiny_kandinsky_decoder),
        ("tiny-stable-unclip", make_tiny_stable_unclip),
    ):
        if not (checkpoints / name / "model_index.json").exists():
            make(checkpoints / name, seed=0)
    return checkpoints


def _quiet(pipeline: Any) -> Any:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def prior_pipe(unclip_models: Path) -> Any:
    from diffusers import KandinskyV22PriorPipeline

    path = unclip_models / "tiny-kandinsky-prior"
    return _quiet(KandinskyV22PriorPipeline.from_pretrained(path, local_files_only=True))


@pytest.fixture(scope="module")
def decoder_pipe(unclip_models: Path) -> Any:
    from diffusers import KandinskyV22Pipeline

    path = unclip_models / "tiny-kandinsky-decoder"
    return _quiet(KandinskyV22Pipeline.from_pretrained(path, local_files_only=True))


@pytest.fixture(scope="module")
def unclip_pipe(unclip_models: Path) -> Any:
    from diffusers import StableUnCLIPPipeline

    path = unclip_models / "tiny-stable-unclip"
    return _quiet(StableUnCLIPPipeline.from_pretrained(path, local_files_only=True))


def decoder_reference_scheduler(folder: Path, name: str) -> Any:
    """Our scheduler name on the folder's config. diffusers' ``from_config`` would carry the DDPM
    config's learned ``variance_type`` over to samplers that know nothing of it, and the
    Kandinsky pipeline would then hand them the variance channels too: drop it for them."""
    import diffusers

    class_name, overrides = REFERENCE_SCHEDULERS[name]
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if class_name != "DDPMScheduler":
        config.pop("variance_type", None)
    return getattr(diffusers, class_name).from_config(config, **overrides)


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def run(make_executor, workflow: Workflow, targets: list[str]) -> dict[str, Any]:
    result = make_executor().run(workflow, targets=targets)
    assert result.ok, result.error and result.error.traceback
    return result.values


def record(name: str, diff: float) -> float:
    MAX_DIFFS[name] = diff
    print(f"max abs diff {name}: {diff:.3g}")
    return diff


# ----- the prior ------------------------------------------------------------------------------


def prior_graph(b: WorkflowBuilder, *, prior: str, text: str, negative: str = "", steps: int = 4,
                scale: float = 4.0, seed: int = 0) -> Any:  # fmt: skip
    loaded = b.add("LoadPrior", id="prior", path=prior)
    return b.add(
        "PriorSample",
        id="prior_sample",
        prior=loaded.prior,
        text=text,
        negative=negative,
        steps=steps,
        guidance_scale=scale,
        seed=seed,
    )


@pytest.mark.parametrize(
    "text, negative, scale, seed, steps",
    [
        ("a red circle on a blue background", "", 4.0, 0, 5),
        ("two small yellow squares", "blurry, green", 4.0, 1234, 4),
        ("a photo of a cat", "", 1.0, 7, 3),
        ("a photo of a dog", "cat", 6.0, 2**40 + 7, 3),
    ],
)
def test_prior_sample_equals_the_kandinsky_prior_pipeline(
    prior_pipe, make_executor, unclip_models, text, negative, scale, seed, steps
):
    expected = prior_pipe(
        text,
        negative_prompt=negative or None,
        num_inference_steps=steps,
        guidance_scale=scale,
        generator=generator(seed),
    )
    b = WorkflowBuilder()
    prior_graph(
        b, prior="tiny-kandinsky-prior", text=text, negative=negative, steps=steps, scale=scale,
        seed=seed,
    )  # fmt: skip
    values = run(make_executor, b.build(), ["prior_sample"])["prior_sample"]
    image, negative_image = values["image_embeds"].embeds, values["negative_image_embeds"].embeds
    assert image.shape == expected.image_embeds.shape == (1, 32)
    diff = max(
        (image - expected.image_embeds).abs().max().item(),
        (negative_image - expected.negative_image_embeds).abs().max().item(),
    )
    assert record(f"prior[{text[:12]}|{negative[:6]}|{scale}]", diff) <= TOLERANCE
    assert (image - negative_image).abs().max() > 1e-3


# ----- Kandinsky 2.2: prior -> decoder --------------------------------------------------------


def kandinsky_graph(*, text: str, negative: str = "", prior_seed: int = 0, seed: int = 0,
                    scheduler: str = "ddpm", steps: int = 4, scale: float = 4.0,
                    prior_scale: float = 4.0, width: int = 64, height: int = 64,
                    components: bool = False) -> Workflow:  # fmt: skip
    """Prompt -> prior -> Kandinsky 2.2 decoder -> MoVQ, as the standard nodes."""
    b = WorkflowBuilder()
    sampled = prior_graph(
        b, prior="tiny-kandinsky-prior", text=text, negative=negative, steps=5, scale=prior_scale,
        seed=prior_seed,
    )  # fmt: skip
    if components:
        unet = b.add("LoadUNet", id="unet", path="tiny-kandinsky-decoder/unet").unet
        vae = b.add("LoadVAE", id="vae", path="tiny-kandinsky-decoder/movq").vae
    else:
        model = b.add("LoadCheckpoint", id="model", path="tiny-kandinsky-decoder")
        unet, vae = model.unet, model.vae
    pos = b.add("UnCLIPConditioning", id="pos", image_embeds=sampled.image_embeds)
    neg = b.add("UnCLIPConditioning", id="neg", image_embeds=sampled.negative_image_embeds)
    sched = b.add("Scheduler", id="sched", unet=unet, name=scheduler, steps=steps)
    cfg = b.add(
        "CFG", id="cfg", unet=unet, positive=pos.conditioning, negative=neg.conditioning,
        scale=scale,
    )  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=width, height=height)
    den = b.add(
        "Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
        latent=empty.latent, seed=seed,
    )  # fmt: skip
    b.add("VAEDecode", id="decode", vae=vae, latent=den.latent)
    return b.build()


def kandinsky_reference(prior_pipe, decoder_pipe, unclip_models, *, text, negative="",
                        prior_seed=0, seed=0, scheduler="ddpm", steps=4, scale=4.0,
                        prior_scale=4.0, width=64, height=64) -> np.ndarray:  # fmt: skip
    embeds = prior_pipe(
        text,
        negative_prompt=negative or None,
        num_inference_steps=5,
        guidance_scale=prior_scale,
        generator=generator(prior_seed),
    )
    decoder_pipe.scheduler = decoder_reference_scheduler(
        unclip_models / "tiny-kandinsky-decoder", scheduler
    )
    return decoder_pipe(
        image_embeds=embeds.image_embeds,
        negative_image_embeds=embeds.negative_image_embeds,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=scale,
        generator=generator(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize(
    "scheduler, text, negative, scale, width, height",
    [
        ("ddpm", "a red circle on a blue background", "", 4.0, 64, 64),  # learned variance
        ("ddim", "two small yellow squares", "blurry", 4.0, 48, 64),  # noise half only
        ("dpmpp_2m", "a photo of a cat", "", 1.0, 64, 32),  # no negative pass
        ("dpmpp_2m_sde", "a photo of a dog", "cat", 7.0, 64, 64),  # stochastic steps
    ],
)
def test_prior_and_decoder_equal_the_kandinsky_pipelines(
    prior_pipe, decoder_pipe, unclip_models, make_executor, scheduler, text, negative, scale,
    width, height,
):  # fmt: skip
    settings = dict(text=text, negative=negative, prior_seed=3, seed=11, scheduler=scheduler,
                    scale=scale, width=width, height=height)  # fmt: skip
    expected = kandinsky_reference(prior_pipe, decoder_pipe, unclip_models, **settings)
    actual = run(make_executor, kandinsky_graph(**settings), ["decode"])["decode"]["image"]
    actual = actual.pixels.numpy()
    assert actual.shape == expected.shape == (1, height, width, 3)
    diff = float(np.abs(actual - expected).max())
    assert record(f"kandinsky[{scheduler}]", diff) <= TOLERANCE


def test_the_decoder_loads_from_its_component_folders_too(make_executor, unclip_models):
    whole = run(make_executor, kandinsky_graph(text="a cube", seed=2), ["decode"])
    parts = run(make_executor, kandinsky_graph(text="a cube", seed=2, components=True), ["decode"])
    expected = whole["decode"]["image"].pixels.numpy()
    assert_same_pixels(parts["decode"]["image"].pixels.numpy(), expected)


def test_a_learned_variance_reaches_ddpm_and_changes_the_picture(
    decoder_pipe, make_executor, unclip_models
):
    """The variance half matters: with a fixed variance instead of the folder's learned range,
    DDPM draws another picture from the same embeddings and seed."""
    from diffusers import DDPMScheduler

    values = run(make_executor, kandinsky_graph(text="a star"), ["prior_sample", "decode"])
    embeds = values["prior_sample"]
    folder = unclip_models / "tiny-kandinsky-decoder"
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    decoder_pipe.scheduler = DDPMScheduler.from_config(config | {"variance_type": "fixed_small"})
    fixed = decoder_pipe(
        image_embeds=embeds["image_embeds"].embeds,
        negative_image_embeds=embeds["negative_image_embeds"].embeds,
        width=64, height=64, num_inference_steps=4, guidance_scale=4.0, generator=generator(0),
        output_type="np",
    ).images  # fmt: skip
    assert np.abs(values["decode"]["image"].pixels.numpy() - fixed).max() > 1e-3


# ----- image variation and blending ------------------------------------------------------------


def variation_graph(*, image: str, blend_text: str | None = None, weight: float = 0.5,
                    seed: int = 0, steps: int = 4) -> Workflow:  # fmt: skip
    b = WorkflowBuilder()
    vision = b.add("LoadCLIPVision", id="vision", path="tiny-kandinsky-prior")
    picture = b.add("LoadImage", id="load", path=image)
    encoded = b.add("CLIPVisionEncode", id="encode", clip_vision=vision.clip_vision,
                    image=picture.image)  # fmt: skip
    embeds = encoded.image_embeds
    if blend_text is not None:
        sampled = prior_graph(b, prior="tiny-kandinsky-prior", text=blend_text, steps=5)
        blend = b.add("BlendEmbeds", id="blend", a=embeds, b=sampled.image_embeds, weight=weight)
        embeds = blend.image_embeds
    model = b.add("LoadCheckpoint", id="model", path="tiny-kandinsky-decoder")
    pos = b.add("UnCLIPConditioning", id="pos", image_embeds=embeds)
    neg = b.add("UnCLIPConditioning", id="neg", image_embeds=encoded.negative_image_embeds)
    sched = b.add("Scheduler", id="sched", unet=model.unet, name="ddpm", steps=steps)
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=4.0)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=64, height=64)
    den = b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
                latent=empty.latent, seed=seed)  # fmt: skip
    b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    return b.build()


def test_image_variation_equals_diffusers_image_embeddings_and_decoder(
    prior_pipe, decoder_pipe, unclip_models, make_executor, tmp_path
):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)  # not square: resize and crop
    picture = Image.fromarray(array, "RGB")
    picture.save(tmp_path / "picture.png")
    expected_embeds = prior_pipe.interpolate(
        [picture], [1.0], num_inference_steps=2, generator=generator(0)
    )
    values = run(make_executor, variation_graph(image=str(tmp_path / "picture.png"), seed=4),
                 ["encode", "decode"])  # fmt: skip
    embeds = values["encode"]["image_embeds"].embeds
    negative = values["encode"]["negative_image_embeds"].embeds
    diff = max(
        (embeds - expected_embeds.image_embeds).abs().max().item(),
        (negative - expected_embeds.negative_image_embeds).abs().max().item(),
    )
    assert record("clip_vision_encode", diff) <= TOLERANCE
    decoder_pipe.scheduler = decoder_reference_scheduler(
        unclip_models / "tiny-kandinsky-decoder", "ddpm"
    )
    expected = decoder_pipe(
        image_embeds=expected_embeds.image_embeds,
        negative_image_embeds=expected_embeds.negative_image_embeds,
        width=64, height=64, num_inference_steps=4, guidance_scale=4.0, generator=generator(4),
        output_type="np",
    ).images  # fmt: skip
    diff = float(np.abs(values["decode"]["image"].pixels.numpy() - expected).max())
    assert record("image_variation", diff) <= TOLERANCE


def test_blend_embeds_is_the_slerp_of_its_inputs(make_executor, unclip_models):
    from nodes.embeds import slerp

    values = run(
        make_executor,
        variation_graph(image=str(ASSET), blend_text="a blue square", weight=0.3),
        ["encode", "prior_sample", "blend"],
    )
    a = values["encode"]["image_embeds"].embeds
    b = values["prior_sample"]["image_embeds"].embeds
    blended = values["blend"]["image_embeds"].embeds
    assert torch.allclose(blended, slerp(a, b, 0.3), atol=1e-6)
    assert torch.allclose(blended, torch.from_numpy(reference_slerp(a[0], b[0], 0.3)).float()[None],
                          atol=1e-5)  # fmt: skip


# ----- slerp against independent formulas ------------------------------------------------------


def reference_slerp(a: Any, b: Any, t: float) -> np.ndarray:
    """Slerp by rotating in the plane of a and b (Gram-Schmidt), norms interpolated by the same
    arc formula: for |a| = |b| it is the textbook rotation; written without nodes' code."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    theta = np.arccos(np.clip(ua @ ub, -1, 1))
    return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)


def rotation_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """For unit vectors: a rotated toward b by t times the angle between them."""
    theta = np.arccos(np.clip(a @ b, -1, 1))
    ortho = b - (a @ b) * a
    ortho /= np.linalg.norm(ortho)
    return np.cos(t * theta) * a + np.sin(t * theta) * ortho


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_slerp_of_unit_vectors_is_a_rotation(t):
    from nodes.embeds import slerp

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 16))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    actual = slerp(torch.tensor(a[None]), torch.tensor(b[None]), t)[0].numpy()
    np.testing.assert_allclose(actual, rotation_slerp(a, b, t), atol=1e-12)
    assert abs(np.linalg.norm(actual) - 1) < 1e-12  # stays on the sphere (a lerp would not)


def test_slerp_of_orthogonal_vectors_follows_the_quarter_circle():
    from nodes.embeds import slerp

    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    mid = slerp(a, b, 0.5)[0]
    assert torch.allclose(mid, torch.tensor([3 / 2**0.5, 3 / 2**0.5]))
    third = slerp(a, b, 1 / 3)[0]
    assert torch.allclose(third, 3 * torch.tensor([np.cos(np.pi / 6), np.sin(np.pi / 6)]).float())


def test_slerp_batches_endpoints_and_parallel_vectors():
    from nodes.embeds import slerp

    rng = np.random.default_rng(2)
    a = torch.tensor(rng.normal(size=(1, 8)))
    b = torch.tensor(rng.normal(size=(3, 8)) * 2.5)
    blended = slerp(a, b, 0.4)
    assert blended.shape == (3, 8)
    for row in range(3):
        np.testing.assert_allclose(
            blended[row].numpy(), reference_slerp(a[0], b[row], 0.4), atol=1e-10
        )
    assert torch.allclose(slerp(a, b, 0.0), a.expand(3, 8))
    assert torch.allclose(slerp(a, b, 1.0), b)
    parallel = slerp(a, 2 * a, 0.5)  # angle 0: the arc is the line
    assert torch.allclose(parallel, 1.5 * a)
    assert torch.isfinite(parallel).all()


# ----- Stable unCLIP ---------------------------------------------------------------------------


def stable_unclip_graph(*, text: str, negative: str = "", prior_seed: int = 0, seed: int = 0,
                        scheduler: str = "ddim", steps: int = 4, scale: float = 7.5,
                        prior_steps: int = 5, prior_scale: float = 4.0, noise_level: int = 0,
                        width: int = 64, height: int = 64) -> Workflow:  # fmt: skip
    b = WorkflowBuilder()
    sampled = prior_graph(
        b, prior="tiny-stable-unclip", text=text, steps=prior_steps, scale=prior_scale,
        seed=prior_seed,
    )  # fmt: skip
    model = b.add("LoadCheckpoint", id="model", path="tiny-stable-unclip")
    pos_text = b.add("TextEncode", id="pos_text", text_encoder=model.text_encoder, text=text)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=negative)
    pos = b.add("UnCLIPConditioning", id="pos", image_embeds=sampled.image_embeds,
                conditioning=pos_text.conditioning, noise_level=noise_level)  # fmt: skip
    sched = b.add("Scheduler", id="sched", unet=model.unet, name=scheduler, steps=steps)
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=scale)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=width, height=height)
    den = b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
                latent=empty.latent, seed=seed)  # fmt: skip
    b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    return b.build()


def stable_unclip_reference(pipe, *, text, negative="", prior_seed=0, seed=0, scheduler="ddim",
                            steps=4, scale=7.5, prior_steps=5, prior_scale=4.0, noise_level=0,
                            width=64, height=64) -> np.ndarray:  # fmt: skip
    """The pipeline with one generator, as it is written; the generator is re-seeded with the
    decoder's seed right after the prior's last step (through the pipeline's step callback), so
    the prior and the decoder each have their own seed, as in a graph."""
    import diffusers

    class_name, overrides = REFERENCE_SCHEDULERS[scheduler]
    config = json.loads(
        (Path(pipe.name_or_path) / "scheduler" / "scheduler_config.json").read_text()
    )
    pipe.scheduler = getattr(diffusers, class_name).from_config(config, **overrides)
    shared = generator(prior_seed)
    calls = []

    def reseed_after_the_prior(step: int, timestep: Any, latents: Any) -> None:
        calls.append(step)
        if len(calls) == prior_steps:
            shared.manual_seed(seed)

    return pipe(
        text,
        negative_prompt=negative,
        prior_num_inference_steps=prior_steps,
        prior_guidance_scale=prior_scale,
        num_inference_steps=steps,
        guidance_scale=scale,
        noise_level=noise_level,
        width=width,
        height=height,
        generator=shared,
        callback=reseed_after_the_prior,
        callback_steps=1,
        output_type="np",
    ).images


@pytest.mark.parametrize(
    "scheduler, text, negative, noise_level, scale, width, height",
    [
        ("ddim", "a red circle on a blue background", "", 0, 7.5, 64, 64),
        ("euler", "two small yellow squares", "blurry", 100, 5.0, 48, 64),
        ("dpmpp_2m", "a photo of a cat", "dog", 500, 1.0, 64, 32),
    ],
)
def test_stable_unclip_equals_the_diffusers_pipeline(
    unclip_pipe, make_executor, scheduler, text, negative, noise_level, scale, width, height
):
    settings = dict(text=text, negative=negative, prior_seed=5, seed=9, scheduler=scheduler,
                    noise_level=noise_level, scale=scale, width=width, height=height)  # fmt: skip
    expected = stable_unclip_reference(unclip_pipe, **settings)
    actual = run(make_executor, stable_unclip_graph(**settings), ["decode"])["decode"]["image"]
    actual = actual.pixels.numpy()
    assert actual.shape == expected.shape == (1, height, width, 3)
    diff = float(np.abs(actual - expected).max())
    assert record(f"stable_unclip[{scheduler}|{noise_level}]", diff) <= TOLERANCE


def test_stable_unclip_image_embeddings_and_noise_level_matter(make_executor, unclip_models):
    base = dict(text="a red circle", steps=3)
    variants = {"a": {}, "other_prior_seed": {"prior_seed": 1}, "noised": {"noise_level": 300}}
    pixels = {
        name: run(make_executor, stable_unclip_graph(**base, **extra), ["decode"])["decode"][
            "image"
        ].pixels
        for name, extra in variants.items()
    }
    assert (pixels["a"] - pixels["other_prior_seed"]).abs().max() > 1e-3
    assert (pixels["a"] - pixels["noised"]).abs().max() > 1e-3


# ----- caching and errors ----------------------------------------------------------------------


def test_changing_only_the_decoder_seed_does_not_rerun_the_prior(make_executor, unclip_models):
    executor = make_executor()
    first = executor.run(kandinsky_graph(text="a tree", seed=1), targets=["decode"])
    assert first.ok and "prior_sample" in first.executed
    second = executor.run(kandinsky_graph(text="a tree", seed=2), targets=["decode"])
    assert second.ok, second.error and second.error.traceback
    assert sorted(second.executed) == ["decode", "denoise"]
    assert "prior_sample" in second.cached
    third = executor.run(kandinsky_graph(text="a tree", prior_seed=4, seed=2), targets=["decode"])
    assert {"prior_sample", "pos", "neg", "denoise", "decode"} <= set(third.executed)


def test_a_kandinsky_decoder_refuses_text_conditioning(make_executor, unclip_models):
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny-kandinsky-decoder")
    b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text="a cat")
    result = make_executor().run(b.build(), targets=["pos"])
    assert not result.ok and "has no text encoder" in result.error.message

    sd = b.add("LoadCheckpoint", id="sd", path="tiny")
    text = b.add("TextEncode", id="sd_text", text_encoder=sd.text_encoder, text="a cat")
    b.add("CFG", id="cfg", unet=model.unet, positive=text.conditioning,
          negative=text.conditioning)  # fmt: skip
    result = make_executor().run(b.build(), targets=["cfg"])
    assert not result.ok and "UnCLIPConditioning" in result.error.message


def test_image_embeddings_on_a_plain_sd_unet_are_refused(make_executor, unclip_models):
    b = WorkflowBuilder()
    sampled = prior_graph(b, prior="tiny-kandinsky-prior", text="a cat", steps=2)
    sd = b.add("LoadCheckpoint", id="sd", path="tiny")
    text = b.add("TextEncode", id="text", text_encoder=sd.text_encoder, text="a cat")
    pos = b.add("UnCLIPConditioning", id="pos", image_embeds=sampled.image_embeds,
                conditioning=text.conditioning)  # fmt: skip
    b.add("CFG", id="cfg", unet=sd.unet, positive=pos.conditioning, negative=text.conditioning)
    result = make_executor().run(b.build(), targets=["cfg"])
    assert not result.ok and "no unCLIP decoder" in result.error.message


def test_make_tiny_writes_unclip_folders_diffusers_loads(tmp_path, capsys):
    from diffusers import KandinskyV22Pipeline

    from nodeflow.cli import main
    from nodes.inventory import describe

    path = tmp_path / "decoder"
    assert main(["models", "make-tiny", str(path), "--family", "kandinsky-decoder"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    pipeline = KandinskyV22Pipeline.from_pretrained(path, local_files_only=True)
    assert pipeline.unet.config.out_channels == 2 * pipeline.unet.config.in_channels
    assert describe(path) == "Kandinsky 2.2 decoder diffusers folder"
    bad = ["models", "make-tiny", str(tmp_path / "x"), "--family", "stable-unclip", "--single-file"]
    assert main(bad) == 2
