"""Per-word cross-attention windows and the local-blend start: parsing, the paper's equations,
and the identities they imply on the shipped demo model.

The paper's controller (google/prompt-to-prompt, ``AttentionControlEdit.forward`` with
``ptp_utils.get_time_words_attention_alpha``) computes, per edit token t at a step,

    edited[:, t] = alpha_t * replace(source probs, edit probs)[:, t] + (1 - alpha_t) * own[:, t]

with alpha_t = 1 while the step is in t's window. ``replace`` is ``source @ M`` for a word swap,
``(source @ M) * a + own * (1 - a)`` for a refinement (a: aligned tokens). This project also
scales every column by the reweight factor at every step (``nodes.p2p``'s documented choice).
From this: a word whose window is 0 attends by its own map from the first step, which is what a
refinement gives a token it does not align; so a word swap whose swapped word has window 0 *is*
the refinement of the same prompts, whenever the alignment leaves exactly that word out.
"""

from __future__ import annotations

import dataclasses
import string

import pytest
import torch
from demo_parts import EDIT, SOURCE, encode, generate, load_demo
from hypothesis import given
from hypothesis import strategies as st

from nodeflow.node import spec_of
from nodes.attention import AttentionCall, Layer, Sampling, sdpa
from nodes.p2p import EditPatch, edit_patch, prompt_to_prompt
from nodes.p2p_tokens import positions_of, refinement_mapper, replacement_mapper
from nodes.p2p_windows import WordWindow, parse_word_windows, token_windows

# --- parsing ----------------------------------------------------------------------------------


def test_word_windows_parse_in_order_with_their_positions() -> None:
    assert parse_word_windows("green:0.4, circle: 0.2;sky:1") == [
        WordWindow("green", 0.4, 0),
        WordWindow("circle", 0.2, 11),
        WordWindow("sky", 1.0, 23),
    ]
    assert parse_word_windows("") == [] and parse_word_windows(" , ;") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("green:1.4", r"'green:1.4' at character 0: the window of 'green' is 1.4; give a fraction"),
        ("red:0.2, green:-0.1", r"at character 9: the window of 'green' is -0.1"),
        ("red:0.2, green:abc", r"at character 9: the window of 'green' is 'abc', not a number"),
        ("green:nan", r"the window of 'green' is nan"),
        ("green:", r"the window of 'green' is '', not a number"),
        ("red:0.2,  green", r"'green' at character 10: write word:fraction"),
        (":0.3", r"at character 0: the word before ':' is missing"),
        ("big red:0.2", r"give one word per window, not 'big red'"),
        (
            "green:0.2, Green:0.3",
            r"at character 11: 'Green' already has a window \(at character 0\)",
        ),
    ],
)
def test_a_bad_window_names_the_word_and_its_position(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_word_windows(text)
    assert str(error.value).startswith("word_cross_steps: ")


WORDS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
FRACTIONS = st.floats(min_value=0, max_value=1, allow_nan=False)


@given(st.dictionaries(WORDS, FRACTIONS, max_size=5), st.sampled_from([", ", ";", " ,  "]))
def test_written_windows_parse_back(windows: dict[str, float], separator: str) -> None:
    text = separator.join(f"{word}:{fraction!r}" for word, fraction in windows.items())
    parsed = parse_word_windows(text)
    assert [(w.word, w.fraction) for w in parsed] == list(windows.items())
    for window in parsed:
        assert text[window.position :].startswith(f"{window.word}:")


@given(st.text(max_size=30))
def test_any_text_parses_or_says_what_is_wrong_where(text: str) -> None:
    try:
        parse_word_windows(text)
    except ValueError as error:
        assert str(error).startswith("word_cross_steps: ") and "at character" in str(error)


# --- the paper's equations, on random attention --------------------------------------------

TOKENS, HEADS, QUERIES, DIM = 6, 2, 4, 8


def paper_outputs(call: AttentionCall, patch: EditPatch, alpha: torch.Tensor) -> torch.Tensor:
    """[source, edit] attention outputs written from the equations above, probabilities
    materialised (the controller never materialises them)."""
    probs = ((call.query @ call.key.transpose(-1, -2)) * call.scale).softmax(dim=-1)
    base, own = probs[0], probs[1]
    aligned = 1 - patch.residual
    replaced = (base @ patch.mapper) * aligned + own * (1 - aligned)
    edited = (alpha * replaced + (1 - alpha) * own) * patch.weights
    return torch.stack([base @ call.value[0], edited @ call.value[1]])


def _patches() -> dict[str, EditPatch]:
    generator = torch.Generator().manual_seed(0)
    spread = torch.rand(TOKENS, TOKENS, generator=generator)
    unaligned = torch.eye(TOKENS)
    unaligned[:, 3] = 0
    ones, none = torch.ones(TOKENS), torch.zeros(TOKENS)
    windows = (((2,), 0.2), ((4, 5), 0.6))
    return {
        "replace": EditPatch(spread, none, ones, 0.8, 0.0, word_windows=windows),
        "refine": EditPatch(
            unaligned, (torch.arange(TOKENS) == 3).float(), ones, 0.8, 0.0, word_windows=windows
        ),
        "reweight": EditPatch(
            torch.eye(TOKENS),
            none,
            torch.tensor([1, 1, 3, 0.5, 1, 2.0]),
            0.8,
            0.0,
            word_windows=windows,
        ),
    }


@pytest.mark.parametrize("mode", ["replace", "refine", "reweight"])
@pytest.mark.parametrize("step", [1, 3, 7, 9])
def test_the_controller_computes_the_papers_per_word_edit(mode: str, step: int) -> None:
    """Steps of 10: at 1 every token is in its window, at 3 and 7 some are, at 9 none is."""
    patch = _patches()[mode]
    generator = torch.Generator().manual_seed(step)
    q, k, v = (
        torch.randn(2, HEADS, n, DIM, generator=generator) for n in (QUERIES, TOKENS, TOKENS)
    )
    sampling = Sampling(steps=10, pictures=2, halves=1, step=step)
    call = AttentionCall(Layer("t", True, (2, 2)), sampling, q, k, v, None, DIM**-0.5)
    ends = torch.tensor([0.8, 0.8, 0.2, 0.8, 0.6, 0.6]) * 10
    alpha = (step < ends.floor()).float()
    output = patch.start(None, sampling).attend(call)
    if output is None:  # no token injected, no factor: the switch computes plain attention
        output = sdpa(q, k, v)
    torch.testing.assert_close(output, paper_outputs(call, patch, alpha), rtol=0, atol=1e-5)


# --- identities on the demo model -------------------------------------------------------------


@pytest.fixture(scope="module")
def parts():
    torch.set_num_threads(1)
    return load_demo()


def edited(parts, source, edit, mode="replace", cross=0.8, self_=0.4, **options):
    patch = edit_patch(parts.text_encoder.tokenizer, source, edit, mode, cross, self_, **options)
    unet = dataclasses.replace(parts.unet, patches=(patch,))
    return generate(parts, encode(parts, source, edit), unet)


@pytest.fixture(scope="module")
def plain_window(parts):
    return edited(parts, SOURCE, EDIT)


def test_a_word_window_equal_to_the_global_one_gives_the_plain_window_exactly(
    parts, plain_window
) -> None:
    latents = edited(parts, SOURCE, EDIT, word_cross_steps="green:0.8, circle:0.8")
    assert torch.equal(latents, plain_window)


def test_a_shorter_word_window_changes_only_the_edit(parts, plain_window) -> None:
    latents = edited(parts, SOURCE, EDIT, word_cross_steps="green:0.3")
    assert torch.equal(latents[0], plain_window[0])
    assert not torch.equal(latents[1], plain_window[1])


def test_a_swapped_word_with_window_zero_is_the_refinement_of_the_same_prompts(parts) -> None:
    tokenizer = parts.text_encoder.tokenizer
    green = positions_of(tokenizer, EDIT, "green")
    mapper, alphas = refinement_mapper(tokenizer, SOURCE, EDIT)
    swapped = replacement_mapper(tokenizer, SOURCE, EDIT)
    swapped[:, green] = 0
    assert torch.equal(mapper, swapped)  # the alignment leaves out exactly the swapped word
    assert alphas[green].tolist() == [0.0] and alphas.sum() == 76
    replaced = edited(parts, SOURCE, EDIT, "replace", word_cross_steps="green:0")
    refined = edited(parts, SOURCE, EDIT, "refine")
    assert torch.equal(replaced, refined)


def test_a_word_outside_the_edited_prompt_is_refused(parts) -> None:
    tokenizer = parts.text_encoder.tokenizer
    windows = parse_word_windows("green:0.4, red:0.2")
    with pytest.raises(ValueError, match=r"'red' \(at character 11\) is not a word of the edited"):
        token_windows(tokenizer, EDIT, windows)
    assert token_windows(tokenizer, EDIT, windows[:1]) == (
        (tuple(positions_of(tokenizer, EDIT, "green")), 0.4),
    )
    with pytest.raises(ValueError, match="word_cross_steps: 'purple'"):
        edited(parts, SOURCE, EDIT, word_cross_steps="purple:0.1")


# --- the local-blend start --------------------------------------------------------------------


@pytest.fixture(scope="module")
def unblended(parts):
    return edited(parts, SOURCE, EDIT)


def test_the_blend_start_defaults_to_the_papers_start_blend_and_counts_whole_steps(
    parts,
) -> None:
    """The node's default is the paper's ``LocalBlend(start_blend=0.2)``, the start every blend
    had before the widget. Blending acts after each step whose index over the step count is at
    least the start, so on 10 steps any start in (0.1, 0.2] skips steps 0 and 1 alone: 0.15
    gives the default's latents exactly, 0.25 (step 2 skipped too) does not."""
    spec = spec_of(prompt_to_prompt).to_json()
    assert spec["inputs"]["blend_start"]["default"] == 0.2
    default = edited(parts, SOURCE, EDIT, blend_words="circle")
    assert torch.equal(edited(parts, SOURCE, EDIT, blend_words="circle", blend_start=0.15), default)
    assert not torch.equal(
        edited(parts, SOURCE, EDIT, blend_words="circle", blend_start=0.25), default
    )


def test_a_blend_starting_after_the_last_step_never_blends(parts, unblended) -> None:
    latents = edited(parts, SOURCE, EDIT, blend_words="circle", blend_start=1.0)
    assert torch.equal(latents, unblended)


def test_an_earlier_blend_start_keeps_more_steps_of_the_source(parts, unblended) -> None:
    """Blending from the first step holds the edit to the source outside the mask from the
    start; from 0.2 it lets two steps (of 10) go their own way first, so the two differ and
    both keep some latent cells exactly the source's, which no unblended cell is."""
    early = edited(parts, SOURCE, EDIT, blend_words="circle", blend_start=0.0)
    late = edited(parts, SOURCE, EDIT, blend_words="circle", blend_start=0.2)
    assert not torch.equal(early[1], late[1])
    for latents in (early, late):
        assert (latents[0] == latents[1]).all(dim=0).any()
    assert not (unblended[0] == unblended[1]).all(dim=0).any()
