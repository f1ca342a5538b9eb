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
    text_encoder: TextEncoder
    """Likewise the text encoder (its LoRA pairs ride on hooks; a full copy is its model)."""
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

    def text_encoder_file(self) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """A fully trained text encoder's file (tensors, metadata), if there is one."""


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

    def text_encoder_file(self) -> None:
        return None  # its pairs are in the LoRA file


def _unet_config(model: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def _trainable_copy(model: Any) -> Any:
    """A deep copy in float32 (AdamW steps in half precision stall), every weight trainable."""
    copied = copy.deepcopy(model)
    if copied.dtype != torch.float32:
        copied = copied.to(torch.float32)
    return copied.requires_grad_(True)


def _cpu_tensors(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in model.state_dict().items()}  # fmt: skip


@dataclass
class FullTrained:
    """A float32 copy of the U-Net (and of the text encoder when ``text_encoder_too``), every
    parameter trained; the input models are not touched."""

    unet: UNet
    text_encoder: TextEncoder
    architecture: dict[str, Any]
    """The ``nodeflow.architecture`` value the saved U-Net file carries (U-Net and VAE)."""
    text_encoder_too: bool = False
    copy_model: Any = field(init=False)
    text_copy: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.copy_model = _trainable_copy(self.unet.model)
        self.unet = dataclasses.replace(self.unet, model=self.copy_model)
        if self.text_encoder_too:
            encoder = self.text_encoder
            if encoder.model is None or encoder.model_2 is not None or encoder.prompt_format:
                raise ValueError(
                    "train_text_encoder: trains one CLIP text encoder (SD 1.x/2.x); "
                    f"{encoder.source or 'this model'} has another kind"
                )
            self.text_copy = _trainable_copy(encoder.model)
            self.text_encoder = dataclasses.replace(encoder, model=self.text_copy)

    @property
    def text_encoder_trained(self) -> bool:
        return self.text_copy is not None

    def parameters(self) -> list[torch.nn.Parameter]:
        found = list(self.copy_model.parameters())
        return found + ([] if self.text_copy is None else list(self.text_copy.parameters()))

    @contextmanager
    def installed(self) -> Iterator[None]:
        yield  # the copies are the models called; nothing to attach

    def state_tensors(self) -> dict[str, torch.Tensor]:
        found = {f"unet.{k}": v for k, v in self.copy_model.state_dict().items()}
        if self.text_copy is not None:
            found |= {f"te.{k}": v for k, v in self.text_copy.state_dict().items()}
        return found

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        self.copy_model.load_state_dict(part("unet."), strict=True)
        if self.text_copy is not None:
            self.text_copy.load_state_dict(part("te."), strict=True)

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return _cpu_tensors(self.copy_model)

    def metadata(self, made: str) -> dict[str, str]:
        """Only the architecture (LoadUNet needs it); how it was made is in the state folder."""
        from nodes.single_file import ARCHITECTURE_KEY

        return {ARCHITECTURE_KEY: json.dumps(self.architecture, sort_keys=True)}

    def text_encoder_file(self) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """The text encoder in transformers layout (``text_model.`` keys, as SD files have it)
        with its config as ``nodeflow.architecture``: a file LoadTextEncoder reads."""
        from nodes.single_file import ARCHITECTURE_KEY, hf_text_state

        if self.text_copy is None:
            return None
        config = {k: v for k, v in self.text_copy.config.to_dict().items()
                  if not k.startswith("_")}  # fmt: skip
        architecture = json.dumps({"text_encoder": config}, sort_keys=True)
        return hf_text_state(_cpu_tensors(self.text_copy)), {ARCHITECTURE_KEY: architecture}


def unet_architecture(unet: UNet, vae_config: dict[str, Any]) -> dict[str, Any]:
    """What a U-Net-only file must say so LoadUNet rebuilds exactly this model: the U-Net's
    config, and the VAE's (its depth gives the latent scale)."""
    vae = {k: v for k, v in vae_config.items() if not k.startswith("_")}
    return {"unet": _unet_config(unet.model), "vae": vae}
