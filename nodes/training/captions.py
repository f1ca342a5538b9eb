"""``CaptionTemplate``: a dataset's captions rewritten, e.g. to carry DreamBooth's rare token.

DreamBooth binds a subject or style to a rare token by training on prompts that contain it
("a sks style picture of ..."); the class prompts without the token keep the prior. The template
puts each caption where ``{caption}`` stands (a template without it gives every picture the same
prompt, DreamBooth's original single instance prompt). Only ``{caption}`` is replaced: braces
elsewhere are kept as written, so a prompt's weighting syntax survives.
"""

from __future__ import annotations

import dataclasses

from nodeflow import node
from nodes.training.dataset import Dataset

PLACEHOLDER = "{caption}"


def templated(dataset: Dataset, template: str) -> Dataset:
    """``dataset`` with every caption put into ``template``; its identity says so."""
    if not template.strip():
        raise ValueError("template: give a caption template, e.g. 'sks style, {caption}'")
    captions = tuple(template.replace(PLACEHOLDER, caption) for caption in dataset.captions)
    return dataclasses.replace(
        dataset, captions=captions, identity=f"{dataset.identity}|template:{template}"
    )


@node("CaptionTemplate", category="training")
def caption_template(dataset: Dataset, template: str = "sks style, {caption}") -> Dataset:
    """Rewrite every caption through ``template`` (``{caption}`` is the original caption): how
    a DreamBooth dataset gets its rare token, e.g. ``sks style, {caption}``."""
    return templated(dataset, template)
