"""ControlNet at sampling time: the residuals a control adds to each U-Net call.

A control rides on the conditioning (as in ComfyUI), so it is part of the cache key like the
prompt and can steer some prompts and not others. ``ApplyControlNet`` puts one on the positive and
the negative conditioning, which is what diffusers' ControlNet pipelines do: the control image
steers both halves of the CFG batch. Several controls chain; their residuals add up in the order
they were applied (diffusers' ``MultiControlNetModel`` sums in its list order).

The sampling loop never names ControlNet: ``nodes.guidance.unet_inputs`` puts a ``ControlRun`` in
the model's inputs under ``CONTROL`` when a conditioning carries controls, and the family adapter
(``nodes.families``) asks it for the residuals of each call and hands them to its model. The step
window (``start``/``end``, fractions of the schedule) is read from the loop's ``Sampling``, the
object every model patch is told the step by, never from a new parameter of ``sample()``.

A T2I-Adapter (``nodes.t2i_adapter``) is the other kind of control on the same socket, as in
ComfyUI's ControlNetLoader: it reads the control image once, not the latents, and its features are
added inside the U-Net's down blocks (diffusers' ``down_intrablock_additional_residuals``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodeflow import socket_type

if TYPE_CHECKING:
    from nodes.attention import Sampling
    from nodes.types import Conditioning

__all__ = [
    "ADAPTER",
    "CONTROL",
    "ControlApplication",
    "ControlNet",
    "ControlRun",
    "Residuals",
    "control_run",
]

CONTROL = "control"
"""The key of the ``ControlRun`` in a model call's inputs; adapters pop it before calling."""


ADAPTER = "t2i_adapter"
"""``ControlNet.kind`` of a T2I-Adapter."""


@socket_type(color="#00897b")
@dataclass(frozen=True, eq=False)
class ControlNet:
    """A ControlNet (diffusers ``ControlNetModel``) or a T2I-Adapter (``T2IAdapter``, ``kind``
    ``t2i_adapter``) and the family of U-Net it was trained for (``sd1``, ``sd2``, ``sdxl``; an
    adapter made for SD 1.x also fits 2.x: it never sees the text), which it must be used with."""

    model: Any
    family: str
    source: str = ""
    kind: str = "controlnet"

    def __nodeflow_nbytes__(self) -> int:
        return 0  # the weights belong to the model manager


@dataclass(frozen=True, eq=False)
class ControlApplication:
    """One ControlNet applied with one image: what ``ApplyControlNet`` adds to a conditioning.

    ``image`` is [batch, 3, height, width] in [0, 1] on the CPU (diffusers' control images are
    not normalised to [-1, 1]). ``start``/``end`` bound the share of the schedule the control acts
    in, as diffusers' ``control_guidance_start``/``control_guidance_end``.
    """

    net: ControlNet
    image: Any
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` lies in the window, decided as diffusers does."""
        return not (step / steps < self.start or (step + 1) / steps > self.end)


def _sum(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tuple):
        return tuple(x + y for x, y in zip(a, b, strict=True))
    return a + b


def _scaled(value: Any, rows: Any) -> Any:
    if value is None:
        return None
    return tuple(v * rows for v in value) if isinstance(value, tuple) else value * rows


@dataclass(frozen=True)
class Residuals:
    """What controls add to a U-Net: a ControlNet one tensor per down-block output and one mid
    (``down``, ``mid``), a T2I-Adapter one per down block, added inside it (``intrablock``)."""

    down: tuple[Any, ...] | None = None
    mid: Any = None
    intrablock: tuple[Any, ...] | None = None

    def __add__(self, other: Residuals) -> Residuals:
        return Residuals(
            _sum(self.down, other.down),
            _sum(self.mid, other.mid),
            _sum(self.intrablock, other.intrablock),
        )

    def masked(self, rows: Any) -> Residuals:
        """Zero the rows of the batch whose conditioning does not carry this control."""
        return Residuals(
            _scaled(self.down, rows), _scaled(self.mid, rows), _scaled(self.intrablock, rows)
        )


@dataclass
class _Group:
    control: ControlApplication
    image: Any
    """The control image for the whole batch, sized to the picture, zero on rows without it."""
    rows: Any
    """None when every row carries the control, else a [batch, 1, 1, 1] tensor of 0 and 1."""
    features: Residuals | None = None
    """A T2I-Adapter's residuals, computed on first use: they depend on the image only."""


class ControlRun:
    """The controls of one sampling run, the images laid out over the model's batch once."""

    def __init__(self, groups: list[_Group], sampling: Sampling | None) -> None:
        self.groups = groups
        self.sampling = sampling

    def residuals(self, sample: Any, timestep: Any, inputs: dict[str, Any]) -> Residuals | None:
        """The summed residuals of the controls active at this step, or None when none is.

        ``inputs`` are the U-Net's own keyword inputs (prompt embeddings, SDXL's added
        conditions): a ControlNet is a copy of the U-Net's encoder and takes the same ones.
        """
        step, steps = (0, 1) if self.sampling is None else (self.sampling.step, self.sampling.steps)
        total: Residuals | None = None
        for group in self.groups:
            if not group.control.active(step, steps):
                continue
            if group.control.net.kind == ADAPTER:
                total = _add(total, self._adapter(group, sample))
                continue
            model = group.control.net.model
            down, mid = model(
                sample,
                timestep,
                encoder_hidden_states=inputs.get("encoder_hidden_states"),
                controlnet_cond=group.image.to(sample.device, model.dtype),
                conditioning_scale=group.control.strength,
                added_cond_kwargs=inputs.get("added_cond_kwargs"),
                return_dict=False,
            )
            found = Residuals(tuple(down), mid)
            if group.rows is not None:
                found = found.masked(group.rows.to(sample.device, sample.dtype))
            total = _add(total, found)
        return total

    @staticmethod
    def _adapter(group: _Group, sample: Any) -> Residuals:
        """A T2I-Adapter's features of the group's image, times its strength, computed once per
        run (diffusers runs the adapter once before the loop)."""
        from nodes.t2i_adapter import adapter_features  # it imports this module

        if group.features is None or group.features.intrablock[0].device != sample.device:
            control = group.control
            found = Residuals(intrablock=adapter_features(control.net, group.image, sample))
            found = Residuals(intrablock=tuple(f * control.strength for f in found.intrablock))
            if group.rows is not None:
                found = found.masked(group.rows.to(sample.device, sample.dtype))
            group.features = found
        return group.features


def _add(total: Residuals | None, found: Residuals) -> Residuals:
    return found if total is None else total + found


def _sized(image: Any, height: int, width: int) -> Any:
    """A control image [b, 3, h, w] at the picture's size (bilinear when it differs; give the
    image at the picture's size for exactly diffusers' numbers)."""
    import torch.nn.functional as F

    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)


def control_run(
    conditionings: list[Conditioning], latents: Any, latent_scale: int, sampling: Sampling | None
) -> ControlRun | None:
    """The ``ControlRun`` for a model batch of ``conditionings`` in order, each filling as many
    rows as ``latents`` has (the CFG layout), or None when no conditioning carries a control."""
    import torch

    from nodes.families.batching import repeat_to  # the families import this module

    applications: list[ControlApplication] = []
    for conditioning in conditionings:
        for control in conditioning.controls:
            if control not in applications:
                applications.append(control)
    if not applications:
        return None
    share = int(latents.shape[0])
    batch = share * len(conditionings)
    height, width = latents.shape[-2] * latent_scale, latents.shape[-1] * latent_scale
    groups = []
    for control in applications:
        image = repeat_to(_sized(control.image, height, width), share)
        carried = [control in c.controls for c in conditionings]
        blank = torch.zeros_like(image)
        full = torch.cat([image if on else blank for on in carried])
        rows = None
        if not all(carried):
            flags = torch.tensor([float(on) for on in carried]).repeat_interleave(share)
            rows = flags.view(batch, 1, 1, 1)
        groups.append(_Group(control, full, rows))
    return ControlRun(groups, sampling)


def unet_family(config: Any) -> str:
    """``sdxl``, ``sd2`` or ``sd1``, read from a U-Net's or a ControlNet's config."""
    if getattr(config, "addition_embed_type", None) == "text_time":
        return "sdxl"
    if getattr(config, "use_linear_projection", False):
        return "sd2"
    return "sd1"


def check_control_fits(unet: Any, net: ControlNet, name: str) -> None:
    """Refuse a ControlNet made for another family (or size) of U-Net than ``unet``'s, naming
    both, before sampling rather than as a shape error inside the U-Net."""
    if net.kind == ADAPTER:
        from nodes.t2i_adapter import check_adapter_fits  # it imports this module

        check_adapter_fits(unet, net, name)
        return
    ours, theirs = unet.model.config, net.model.config
    family = unet_family(ours)
    where = f" ({net.source})" if net.source else ""
    if net.family != family:
        raise ValueError(
            f"{name}: the ControlNet{where} is made for {net.family} models, but this U-Net is "
            f"{family}; load a ControlNet of the model's family"
        )
    for key in ("block_out_channels", "cross_attention_dim", "layers_per_block"):
        if list(_as_list(getattr(ours, key))) != list(_as_list(getattr(theirs, key))):
            raise ValueError(
                f"{name}: the ControlNet{where} does not fit this {family} U-Net ({key} "
                f"{getattr(theirs, key)} against the U-Net's {getattr(ours, key)})"
            )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
