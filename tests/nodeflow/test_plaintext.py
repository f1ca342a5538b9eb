"""Text for the terminal: reST made plain, summaries cut cleanly, suggestions for typos."""

from __future__ import annotations

import pytest

from nodeflow.plaintext import (
    did_you_mean,
    first_paragraph,
    plain,
    shorten,
    summary,
    with_suggestion,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The ``nodeflow`` command line", "The nodeflow command line"),
        (
            "a :class:`Image` or :py:meth:`~nodeflow.Executor.run`",
            "a Image or nodeflow.Executor.run",
        ),
        (":ref:`the plugin guide <plugins>`", "the plugin guide"),
        ("see `the docs <https://x.org>`_ and `name`", "see the docs and name"),
        ("**strong** and *emphasis*", "strong and emphasis"),
        ("2 * 3 * 4, a*b, ``*args``", "2 * 3 * 4, a*b, *args"),
        ("``path``: CLIP ViT-L, ``path_2``", "path: CLIP ViT-L, path_2"),
    ],
)
def test_plain_strips_inline_rest_markup(text, expected):
    assert plain(text) == expected


def test_first_paragraph_is_one_plain_line():
    doc = "Load a ``LoRA``\nfrom a file.\n\nDetails ``here``."
    assert first_paragraph(doc) == "Load a LoRA from a file."


def test_shorten_keeps_whole_sentences_or_cuts_at_a_word_with_an_ellipsis():
    text = "Denoise with each seed: the same settings. Labelled seed n."
    assert shorten(text, 100) == text
    assert shorten(text, 50) == "Denoise with each seed: the same settings."
    cut = shorten(text, 30)
    assert cut == "Denoise with each seed: the…"
    assert len(cut) <= 30
    # "1.x," ends no sentence, and the comma before the cut goes
    assert shorten("Load a Stable Diffusion 1.x, 2.x or XL model.", 30) == (
        "Load a Stable Diffusion 1.x…"
    )
    assert shorten("Supercalifragilistic", 8) == "Superca…"


@pytest.mark.parametrize("width", range(5, 90, 7))
def test_summaries_never_exceed_their_width_or_cut_a_word_silently(width):
    doc = (
        "Load a CLIP text encoder, or SDXL's pair (``path``: CLIP ViT-L, ``path_2``: OpenCLIP\n"
        "bigG), from diffusers folders or single files.\n\nMore."
    )
    line = summary(doc, width)
    assert len(line) <= width and "``" not in line
    whole = first_paragraph(doc)
    if line.endswith("…"):  # cut inside the first sentence, at the end of a word
        kept = line.removesuffix("…")
        assert (whole.startswith(kept) and whole[len(kept)] in " ,;:(") or len(kept) == width - 1
    else:  # whole sentences
        assert whole.startswith(line) and line.endswith(".")


def test_did_you_mean_names_the_closest_name_or_nothing():
    known = ["TextEncode", "LoadTextEncoder", "VAEEncode", "Denoise"]
    assert did_you_mean("TextEncdoe", known) == "did you mean 'TextEncode'?"
    assert did_you_mean("textencode", known) == "did you mean 'TextEncode'?"
    assert did_you_mean("Zzyzx", known) is None
    assert did_you_mean("x", []) is None
    assert with_suggestion("unknown 'Denose'", "Denose", known).endswith(
        "; did you mean 'Denoise'?"
    )
    assert with_suggestion("unknown 'Q'", "Q", known) == "unknown 'Q'"
