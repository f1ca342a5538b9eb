"""Where the files the pack's widgets pick are found, told to the engine as ``FileKind``s.

The engine knows no checkpoints, so the pack says, through ``nodeflow_loaders``, which folders
and built-in names each ``Widget(files=...)`` kind resolves against; validation then reports a
missing model before anything runs. The folders are the ones the loaders search (their ``*_DIRS``),
so a name validation accepts is one the node can load (``tests/nodes/test_files.py`` holds them
to that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nodeflow import Environment, FileKind
from nodes.classifier_guidance import BUILT_IN_CLASSIFIERS, CLASSIFIER_DIRS
from nodes.controlnet import BUILT_IN_CONTROLNETS, CONTROLNET_DIRS
from nodes.image import ASSETS
from nodes.loaders import (
    BUILT_IN_CHECKPOINTS,
    BUILT_IN_LORAS,
    CHECKPOINT_DIRS,
    TEXT_DIRS,
    UNET_DIRS,
    VAE_DIRS,
)


def _models(*kinds: str) -> Callable[[Environment], Sequence[Path]]:
    """The models dir's subfolders of these kinds (and the extra folders of each kind), in the
    order the loaders search them."""
    return lambda env: [folder for kind in kinds for folder in env.model_dirs(kind)]


FILE_KINDS: dict[str, FileKind] = {
    "checkpoints": FileKind(_models(*CHECKPOINT_DIRS), BUILT_IN_CHECKPOINTS, what="checkpoint"),
    "unet": FileKind(_models(*UNET_DIRS), what="U-Net"),
    "vae": FileKind(_models(*VAE_DIRS), what="VAE"),
    "text_encoders": FileKind(_models(*TEXT_DIRS), what="text encoder"),
    "loras": FileKind(_models("loras"), BUILT_IN_LORAS, what="LoRA file", directories=False),
    "controlnet": FileKind(_models(*CONTROLNET_DIRS), BUILT_IN_CONTROLNETS, what="ControlNet"),
    "classifiers": FileKind(
        _models(*CLASSIFIER_DIRS), BUILT_IN_CLASSIFIERS, what="classifier", directories=False
    ),
    "input": FileKind(lambda env: [env.input_dir, ASSETS], what="image", directories=False),
}
"""By the ``files`` name the pack's widgets declare."""
