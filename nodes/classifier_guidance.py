"""Classifier guidance (Dhariwal & Nichol 2021): steer sampling toward a class with the gradient
of a noise-aware classifier's log-probability, ``grad_x log p(y | x_t)``.

``LoadClassifier`` reads a ``nodes.latent_classifier`` file (``demo-classifier``, the color of the
demo scenes' shapes, is built in); ``ClassifierGuidance`` wraps any ``Guider`` (CFG at any scale,
or CFG at scale 1 for unconditional sampling from an empty prompt) with one more gradient term,
so guidance terms chain and combine with CFG. How the gradient enters the prediction for each
scheduler is ``nodes.gradient_guidance``'s business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from nodeflow import Context, Environment, Widget, node, socket_type
from nodeflow.runtime.models import file_identity
from nodes.gradient_guidance import GuidancePoint
from nodes.loaders import resolve_model
from nodes.types import Guider

__all__ = [
    "BUILT_IN_CLASSIFIERS",
    "CLASSIFIER_DIRS",
    "Classifier",
    "ClassifierTerm",
    "classifier_guidance",
    "load_classifier_node",
]

CLASSIFIER_DIRS = ("classifiers",)
DEMO_CLASSIFIER = "demo-classifier"
SHIPPED_CLASSIFIER = Path(__file__).resolve().parent / "demo/model/demo-classifier.safetensors"
BUILT_IN_CLASSIFIERS = {
    DEMO_CLASSIFIER: "the demo model's noise-aware classifier of the shapes' color (shipped)"
}


@socket_type(color="#d4e157")
@dataclass(frozen=True, eq=False)
class Classifier:
    """A noise-aware classifier over a denoiser's latents (``nodes.latent_classifier``)."""

    model: Any
    source: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model.config.labels)

    def __nodeflow_nbytes__(self) -> int:
        return 0  # the weights belong to the model manager


@dataclass(frozen=True, eq=False)
class ClassifierTerm:
    """``log p(label | x_t, t)`` of a classifier: the gradient term ``ClassifierGuidance`` adds."""

    classifier: Any
    label: int | tuple[int, ...]
    """One class for every picture, or one per picture of the batch."""
    scale: float

    @property
    def models(self) -> tuple[Any, ...]:
        return (self.classifier,)

    def log_prob(self, point: GuidancePoint) -> Any:
        import torch

        latents = point.latents
        timesteps = torch.as_tensor(point.timestep, device=latents.device).float().reshape(-1)
        timesteps = timesteps.expand(latents.shape[0])
        weights = next(self.classifier.parameters())
        logits = self.classifier(latents.to(weights.dtype), timesteps)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        log_probs = torch.log_softmax(logits, dim=-1)
        labels = torch.as_tensor(self.label, device=latents.device).reshape(-1, 1)
        return log_probs.gather(1, labels.expand(latents.shape[0], 1))[:, 0]


def resolve_classifier(name: str, env: Environment) -> Path:
    """A classifier file under classifiers/, an absolute path, or the built-in one."""
    try:
        return resolve_model(name, env, *CLASSIFIER_DIRS, what="classifier")
    except FileNotFoundError:
        if name == DEMO_CLASSIFIER:
            return SHIPPED_CLASSIFIER
        raise


def _fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    name = values.get("path") or ""
    return file_identity(resolve_classifier(name, env)) if name else None


@node("LoadClassifier", category="loaders", fingerprint=_fingerprint)
def load_classifier_node(
    ctx: Context,
    path: Annotated[str, Widget(files="classifiers")] = DEMO_CLASSIFIER,
) -> Classifier:
    """Load a noise-aware latent classifier (one safetensors file with its config in the
    metadata) for ClassifierGuidance; ``demo-classifier`` reads the demo scenes' shape color."""
    from nodes.latent_classifier import load_classifier

    location = resolve_classifier(path, ctx.env)
    key = ("classifier", file_identity(location))

    def load() -> Classifier:
        model = load_classifier(location)
        ctx.models.register(model, label=f"classifier {location.name}")
        return Classifier(model, source=str(location))

    return ctx.models.get(key, load)


def _check(guider: Guider, classifier: Classifier, label: int) -> None:
    labels = classifier.labels
    if label >= len(labels):
        raise ValueError(
            f"input 'label': {label} is out of range for {Path(classifier.source).name or 'the'} "
            f"classifier's {len(labels)} classes (0..{len(labels) - 1}: {', '.join(labels)})"
        )
    wanted = int(classifier.model.config.in_channels)
    channels = guider.unet.latent_channels
    if wanted != channels:
        raise ValueError(
            f"input 'classifier': it reads {wanted}-channel latents, but this guider's model "
            f"({guider.unet.family.name}) samples {channels}-channel latents"
        )


@node("ClassifierGuidance", category="sampling")
def classifier_guidance(
    guider: Guider,
    classifier: Classifier,
    label: Annotated[int, Field(ge=0)] = 0,
    scale: Annotated[float, Field(ge=0, le=1000)] = 10.0,
) -> Guider:
    """Steer a guider toward class ``label`` (an index into the classifier's labels; for
    demo-classifier 0 red, 1 orange, 2 yellow, 3 green, 4 blue, 5 purple, 6 white, 7 black) with
    the gradient of the classifier's log-probability, times ``scale`` (0: no change)."""
    _check(guider, classifier, label)
    term = ClassifierTerm(classifier.model, label, scale)
    return dataclasses.replace(guider, terms=(*guider.terms, term))
