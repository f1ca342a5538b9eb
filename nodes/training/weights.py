"""What a training run changes: LoRA pairs on the frozen models, or a private copy of the U-Net.

The training loop (``nodes.training.trainer``) is the same for both; it asks its ``Trained``
for the parameters to optimise, the models to call, the tensors of a resumable state and the
file users load. Neither kind ever changes the shared models the model manager holds:

* ``LoraTrained`` attaches pairs to the U-Net (and, when asked, the CLIP text encoder's
  attention projections) with forward hooks for the duration of the run, and writes them in the
  kohya layout (``lora_unet_...``, ``lora_te_text_model_...``) that LoadLoRA and diffusers'
  ``load_lora_weights`` both read.
* ``FullTrained`` trains a float32 deep copy of the U-Net (full fine-tuning, DreamBooth's
  setting) and writes its diffusers-layout state dict with the model's config in the
  ``nodeflow.architecture`` metadata, the U-Net file ``LoadUNet`` reads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from nodes.training.lora_layers import LoraPair, attached, kohya_state, make_pairs
from nodes.types import TextEncoder, UNet


class Trained(Protocol):
    """What the loop needs from the kind of weights it trains."""

    unet: UNet
    """The U-Net value to call while training (the input one, or one holding the copy)."""
    text_encoder_trained: bool
    """Whether the text encoder changes, so prompts must be encoded with gradients each step."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def installed(self) -> Any:
        """A context manager: the trained weights in effect (hooks on, copies in training)."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every trained tensor, float32, by a stable name (a resumable state's weights)."""

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of the file users load."""

    def metadata(self, made: str) -> dict[str, str]:
        """That file's metadata (``made``: how it was trained, as JSON). One key only:
        safetensors writes several in a random order, and equal runs must give equal bytes."""


def _te_key(name: str) -> str:
    """kohya's name for a text-encoder module: transformers 5 drops CLIPTextModel's
    ``text_model.`` level, which kohya files (and diffusers' converter) expect."""
    name = name if name.startswith("text_model.") else "text_model." + name
    return "lora_te_" + name.replace(".", "_")


@dataclass
class LoraTrained:
    """LoRA pairs on the U-Net's ``unet_targets`` and the text encoder's ``te_targets``."""

    unet: UNet
    text_encoder: TextEncoder
    unet_targets: tuple[str, ...]
    te_targets: tuple[str, ...]
    rank: int
    alpha: float
    seed: int
    unet_pairs: dict[str, LoraPair] = field(init=False)
    te_pairs: dict[str, LoraPair] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.unet_pairs = make_pairs(self.unet.model, self.unet_targets, self.rank, self.alpha,
                                     self.seed, what="U-Net")  # fmt: skip
        if self.te_targets:
            encoder = self.text_encoder
            if encoder.model is None or encoder.model_2 is not None or encoder.prompt_format:
                raise ValueError(
                    "text_encoder_modules: text-encoder LoRA trains one CLIP text encoder (SD 1.x/"
                    f"2.x); {encoder.source or 'this model'} has another kind"
                )
            self.te_pairs = make_pairs(encoder.model, self.te_targets, self.rank, self.alpha,
                                       self.seed + 1, what="text encoder",
                                       widget="text_encoder_modules")  # fmt: skip

    @property
    def text_encoder_trained(self) -> bool:
        return bool(self.te_pairs)

    def _all(self) -> dict[str, LoraPair]:
        return {f"unet.{k}": v for k, v in self.unet_pairs.items()} | {
            f"te.{k}": v for k, v in self.te_pairs.items()
        }

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for pair in self._all().values() for p in (pair.down, pair.up)]

    @contextmanager
    def installed(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(attached(self.unet.model, self.unet_pairs))
            if self.te_pairs:
                stack.enter_context(attached(self.text_encoder.model, self.te_pairs))
            yield

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{w}": getattr(pair, w)
            for name, pair in self._all().items()
            for w in ("down", "up")
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, pair in self._all().items():
                pair.down.copy_(tensors[f"{name}.down"])
                pair.up.copy_(tensors[f"{name}.up"])

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return kohya_state(self.unet_pairs) | kohya_state(self.te_pairs, key=_te_key)

    def metadata(self, made: str) -> dict[str, str]:
        return {"nodeflow_training": made}


def _unet_config(model: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


@dataclass
class FullTrained:
    """A float32 copy of the U-Net, every parameter trained; the input model is not touched."""

    unet: UNet
    architecture: dict[str, Any]
    """The ``nodeflow.architecture`` value the saved file carries (U-Net and VAE configs)."""
    copy_model: Any = field(init=False)

    def __post_init__(self) -> None:
        source = self.unet.model
        self.copy_model = copy.deepcopy(source).to(torch.float32)
        self.copy_model.requires_grad_(True)
        self.unet = dataclasses.replace(self.unet, model=self.copy_model)

    text_encoder_trained = False

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.copy_model.parameters())

    @contextmanager
    def installed(self) -> Iterator[None]:
        self.copy_model.train()
        try:
            yield
        finally:
            self.copy_model.eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"unet.{k}": v for k, v in self.copy_model.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        state = {k.removeprefix("unet."): v for k, v in tensors.items() if k.startswith("unet.")}
        self.copy_model.load_state_dict(state, strict=True)

    def file_tensors(self) -> dict[str, torch.Tensor]:
        state = self.copy_model.state_dict()
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}

    def metadata(self, made: str) -> dict[str, str]:
        """Only the architecture (LoadUNet needs it); how it was made is in the state folder."""
        from nodes.single_file import ARCHITECTURE_KEY

        return {ARCHITECTURE_KEY: json.dumps(self.architecture, sort_keys=True)}


def unet_architecture(unet: UNet, vae_config: dict[str, Any]) -> dict[str, Any]:
    """What a U-Net-only file must say so LoadUNet rebuilds exactly this model: the U-Net's
    config, and the VAE's (its depth gives the latent scale)."""
    vae = {k: v for k, v in vae_config.items() if not k.startswith("_")}
    return {"unet": _unet_config(unet.model), "vae": vae}
