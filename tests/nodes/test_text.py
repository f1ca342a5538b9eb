"""TextEncode: plain prompts as diffusers, weighted and long prompts as A1111 and ComfyUI.

The references here are written from the published algorithms with the tokenizer and encoder
called directly, never through ``nodes.text``:

- chunks: the prompt's tokens in runs of 75, each as BOS + tokens + EOS, the last padded with
  the tokenizer's pad token to 77; the chunks' hidden states concatenated along the tokens; the
  pooled output of the first chunk (A1111 ``sd_hijack_clip.py``, ComfyUI ``sd1_clip.py``);
- "comfy": z = (z - z_empty) * weight + z_empty for each token of weight != 1, z_empty being the
  empty prompt's hidden states (ComfyUI ``ClipTokenWeightEncoder.encode_token_weights``);
- "a1111": z * weight, then rescaled to the chunk's original mean (A1111 ``EmphasisOriginal``).

The long prompts are single-token words without commas, where neither tool's boundary rules
(ComfyUI keeping words whole, A1111 moving words after a comma) move a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sdgraphs import sd_graph
from test_parity import TOLERANCE, reference_scheduler

from nodes.text import encode_text
from nodes.types import Conditioning, Guider, TextEncoder, UNet

BOS, EOS = 49406, 49407
SCENE = "a red circle and a blue square under a green triangle near the small yellow star"
LONG = " ".join([SCENE] * 7)  # 112 tokens: two chunks


def ids_of(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def chunk_ids(tokenizer: Any, tokens: list[int]) -> list[list[int]]:
    """77-token chunks of ``tokens``, as both tools make them."""
    chunks = [tokens[i : i + 75] for i in range(0, len(tokens), 75)] or [[]]
    return [[BOS, *c, EOS] + [tokenizer.pad_token_id] * (75 - len(c)) for c in chunks]


def comfy_weighted(z: torch.Tensor, empty: torch.Tensor, weights: list[float]) -> torch.Tensor:
    z = z.clone()
    for j, weight in enumerate(weights):
        if weight != 1.0:
            z[0, j] = (z[0, j] - empty[0, j]) * weight + empty[0, j]
    return z


def a1111_weighted(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    original_mean = z.mean()
    z = z * torch.tensor(weights)[None, :, None]
    return z * (original_mean / z.mean())


def chunk_weights(weights: list[float]) -> list[list[float]]:
    chunks = [weights[i : i + 75] for i in range(0, len(weights), 75)] or [[]]
    return [[1.0, *w, 1.0] + [1.0] * (75 - len(w)) for w in chunks]


def weighted(z, empty, weights, weighting):
    return comfy_weighted(z, empty, weights) if weighting == "comfy" else a1111_weighted(z, weights)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sd(pipe) -> TextEncoder:
    return TextEncoder(tokenizer=pipe.tokenizer, model=pipe.text_encoder)


@pytest.fixture(scope="module")
def sdxl(models_dir: Path) -> TextEncoder:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = models_dir / "checkpoints" / "tiny-sdxl"
    return TextEncoder(
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        model=CLIPTextModel.from_pretrained(folder / "text_encoder").eval(),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        model_2=CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2").eval(),
    )


def sd_encode(sd: TextEncoder, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        output = sd.model(torch.tensor([ids]))
    return output[0], output[1]


# --- plain prompts ------------------------------------------------------------------------


def test_a_plain_prompt_is_what_diffusers_encodes_bit_for_bit(pipe, sd) -> None:
    with torch.no_grad():
        expected, _ = pipe.encode_prompt("a red circle", "cpu", 1, False)
    assert torch.equal(encode_text(sd, "a red circle", "cpu").embeds, expected)


def run(make_executor, workflow) -> np.ndarray:
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def weighted_graph(weighting: str, **settings: Any):
    return sd_graph(save=False, **settings).with_values(
        {("pos", "weighting"): weighting, ("neg", "weighting"): weighting}
    )


@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
@pytest.mark.parametrize(
    "weighted, plain",
    [
        ("(a red:1.0) (circle:1)", "a red circle"),
        ("((a red circle:1.0):1)", "a red circle"),
        (f"({LONG}:1.0)", LONG),
    ],
)
def test_weights_of_one_give_exactly_the_plain_pixels(make_executor, weighting, weighted, plain):
    expected = run(make_executor, sd_graph(save=False, prompt=plain, negative="blurry"))
    actual = run(make_executor, weighted_graph(weighting, prompt=weighted, negative="(blurry:1)"))
    assert np.array_equal(actual, expected)


def test_weights_of_one_give_exactly_the_plain_sdxl_pixels(make_executor):
    settings = {"checkpoint": "tiny-sdxl", "negative": "blurry"}
    expected = run(make_executor, sd_graph(save=False, prompt=LONG, **settings))
    actual = run(make_executor, weighted_graph("a1111", prompt=f"({LONG}:1)", **settings))
    assert np.array_equal(actual, expected)


# --- long prompts ---------------------------------------------------------------------------


def test_a_long_prompt_is_the_chunked_encoding_both_tools_make(sd) -> None:
    tokens = ids_of(sd.tokenizer, LONG)
    assert len(tokens) == len(SCENE.split()) * 7 > 75  # one token a word, and no commas
    chunks = chunk_ids(sd.tokenizer, tokens)
    assert len(chunks) == 2
    outputs = [sd_encode(sd, ids) for ids in chunks]

    conditioning = encode_text(sd, LONG, "cpu")
    assert conditioning.embeds.shape == (1, 154, 32)
    close(conditioning.embeds, torch.cat([z for z, _ in outputs], dim=1))
    close(conditioning.pooled, outputs[0][1])


def test_break_ends_a_chunk(sd) -> None:
    chunks = [
        *chunk_ids(sd.tokenizer, ids_of(sd.tokenizer, "a red circle")),
        *chunk_ids(sd.tokenizer, ids_of(sd.tokenizer, "a blue square")),
    ]
    expected = torch.cat([sd_encode(sd, ids)[0] for ids in chunks], dim=1)
    close(encode_text(sd, "a red circle BREAK a blue square", "cpu").embeds, expected)
    # A leading BREAK makes an empty chunk first, a trailing one nothing (A1111).
    assert encode_text(sd, "BREAK a red circle", "cpu").embeds.shape[1] == 154
    assert encode_text(sd, "a red circle BREAK", "cpu").embeds.shape[1] == 77


# --- weighting ------------------------------------------------------------------------------

PIECES = [("a ", 1.0), ("red", 1.5), (" circle and a ", 1.0), ("blue square", 1 / 1.1)]
PROMPT = "a (red:1.5) circle and a [blue square]"


def tokens_and_weights(tokenizer: Any, pieces) -> tuple[list[int], list[float]]:
    tokens, weights = [], []
    for text, weight in pieces:
        ids = ids_of(tokenizer, text)
        tokens += ids
        weights += [weight] * len(ids)
    return tokens, weights


@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
@pytest.mark.parametrize("long", [False, True], ids=["one chunk", "two chunks"])
def test_weights_follow_the_published_formula(sd, weighting, long) -> None:
    pieces = [(LONG + " ", 1.0), *PIECES] if long else PIECES
    prompt = (LONG + " " if long else "") + PROMPT
    tokens, weights = tokens_and_weights(sd.tokenizer, pieces)
    empty, _ = sd_encode(sd, chunk_ids(sd.tokenizer, [])[0])
    expected = torch.cat(
        [
            weighted(sd_encode(sd, ids)[0], empty, w, weighting)
            for ids, w in zip(chunk_ids(sd.tokenizer, tokens), chunk_weights(weights), strict=True)
        ],
        dim=1,
    )
    actual = encode_text(sd, prompt, "cpu", weighting).embeds
    close(actual, expected)
    assert not torch.allclose(actual, encode_text(sd, prompt.replace(":1.5", ":1"), "cpu").embeds)


def test_comfy_weight_zero_is_the_empty_prompt_there(sd) -> None:
    empty = encode_text(sd, "", "cpu").embeds
    zeroed = encode_text(sd, "(a red circle:0)", "cpu", "comfy").embeds
    close(zeroed[:, 1:4], empty[:, 1:4])


@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
def test_sdxl_weights_both_encoders_and_pools_the_first_chunk(sdxl, weighting) -> None:
    prompt = LONG + " " + PROMPT
    tokens, weights = tokens_and_weights(sdxl.tokenizer, [(LONG + " ", 1.0), *PIECES])
    assert ids_of(sdxl.tokenizer_2, prompt) == ids_of(sdxl.tokenizer, prompt)
    per_encoder, pooled = [], None
    for tokenizer, model in ((sdxl.tokenizer, sdxl.model), (sdxl.tokenizer_2, sdxl.model_2)):

        def hidden(ids: list[int], model=model) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                output = model(torch.tensor([ids]), output_hidden_states=True)
            return output.hidden_states[-2], output[0]

        empty, _ = hidden(chunk_ids(tokenizer, [])[0])
        chunks = chunk_ids(tokenizer, tokens)
        zs = [
            weighted(hidden(ids)[0], empty, w, weighting)
            for ids, w in zip(chunks, chunk_weights(weights), strict=True)
        ]
        per_encoder.append(torch.cat(zs, dim=1))
        pooled = hidden(chunks[0])[1]
    assert sdxl.tokenizer_2.pad_token_id == 0  # OpenCLIP pads with "!"

    conditioning = encode_text(sdxl, prompt, "cpu", weighting)
    assert conditioning.embeds.shape == (1, 154, 64)
    close(conditioning.embeds, torch.cat(per_encoder, dim=-1))
    close(conditioning.pooled, pooled)


# --- CFG with prompts of different lengths ---------------------------------------------------


def test_prompts_of_different_lengths_guide_as_if_each_ran_alone(pipe, sd) -> None:
    from diffusers import DDIMScheduler

    from nodes.guidance import predict_noise

    positive = encode_text(sd, LONG, "cpu")
    negative = encode_text(sd, "blurry", "cpu")
    assert positive.embeds.shape[1] == 2 * negative.embeds.shape[1]
    unet = UNet(model=pipe.unet, scheduler_config=dict(pipe.scheduler.config))
    guider = Guider(unet=unet, positive=positive, negative=negative, scale=7.5)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[1]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        guided = predict_noise(guider, latents, t, scheduler)
        cond = pipe.unet(latents, t, encoder_hidden_states=positive.embeds).sample
        uncond = pipe.unet(latents, t, encoder_hidden_states=negative.embeds).sample
    torch.testing.assert_close(guided, uncond + 7.5 * (cond - uncond), rtol=0, atol=1e-5)


def test_a_long_prompt_and_a_short_negative_give_the_diffusers_pixels(pipe, make_executor, sd):
    pipe.scheduler = reference_scheduler(pipe, "euler")
    positive = torch.cat(
        [sd_encode(sd, ids)[0] for ids in chunk_ids(sd.tokenizer, ids_of(sd.tokenizer, LONG))],
        dim=1,
    )
    with torch.no_grad():
        negative, _ = pipe.encode_prompt("blurry", "cpu", 1, False)
    expected = pipe(
        prompt_embeds=positive,
        negative_prompt_embeds=torch.cat([negative, negative], dim=1),  # the same, as shown above
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
        num_inference_steps=4,
        guidance_scale=7.5,
        width=64,
        height=64,
    ).images
    actual = run(make_executor, sd_graph(save=False, prompt=LONG, negative="blurry", seed=3))
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_sdxl_long_prompt_and_short_negative_give_the_diffusers_pixels(
    models_dir, make_executor, sdxl
):
    from diffusers import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline.from_pretrained(
        models_dir / "checkpoints" / "tiny-sdxl", local_files_only=True
    )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = reference_scheduler(pipeline, "euler")
    positive, pooled = [], None
    for tokenizer, model in ((sdxl.tokenizer, sdxl.model), (sdxl.tokenizer_2, sdxl.model_2)):
        chunks = chunk_ids(tokenizer, ids_of(tokenizer, LONG))
        with torch.no_grad():
            outputs = [model(torch.tensor([ids]), output_hidden_states=True) for ids in chunks]
        positive.append(torch.cat([o.hidden_states[-2] for o in outputs], dim=1))
        pooled = outputs[0][0]
    with torch.no_grad():
        negative, _, negative_pooled, _ = pipeline.encode_prompt(
            "blurry", device="cpu", do_classifier_free_guidance=False
        )
    expected = pipeline(
        prompt_embeds=torch.cat(positive, dim=-1),
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=torch.cat([negative, negative], dim=1),
        negative_pooled_prompt_embeds=negative_pooled,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
        num_inference_steps=4,
        guidance_scale=5.0,
        width=64,
        height=64,
    ).images
    workflow = sd_graph(
        save=False, checkpoint="tiny-sdxl", prompt=LONG, negative="blurry", scale=5.0
    )
    assert np.abs(run(make_executor, workflow) - expected).max() <= TOLERANCE


# --- the node -------------------------------------------------------------------------------


def test_textencode_offers_both_weightings_and_documents_them(sd_catalog) -> None:
    spec = sd_catalog.nodes["TextEncode"].to_json()
    weighting = spec["inputs"]["weighting"]
    assert weighting["default"] == "comfy"
    assert set(weighting["schema"]["enum"]) == {"comfy", "a1111"}
    doc = spec["description"]
    assert "empty prompt" in doc and "mean" in doc and "BREAK" in doc


def test_a_malformed_prompt_fails_at_its_node_naming_the_character(make_executor) -> None:
    result = make_executor().run(sd_graph(prompt="a (red [circle) x]"), targets=["pos"])
    assert not result.ok
    assert result.error.node == "pos"
    assert "character 15" in str(result.error.message)


def test_conditioning_lengths_differ_only_by_whole_chunks(sd) -> None:
    lengths = {encode_text(sd, p, "cpu").embeds.shape[1] for p in ("", "a", LONG, LONG * 2)}
    assert lengths == {77, 154, 231}
    assert isinstance(encode_text(sd, "a", "cpu"), Conditioning)
