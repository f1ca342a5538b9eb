"""ComfyUI's KSampler behind the diffusers scheduler interface, so ``Denoise`` runs it unchanged.

``Denoise`` asks a scheduler for its timesteps, scales each model input, hands each guided model
output to ``step`` and noises an img2img latent with ``add_noise``. This adapter answers those
calls ComfyUI's way:

- the timesteps are every model evaluation a solver will make (a second-order step is two), each
  rounded to its nearest training timestep as ComfyUI does; ``order`` is the evaluations per
  step, so ``Denoise``'s img2img start index (steps skipped x order) skips whole steps;
- the model input is ``x / sqrt(sigma^2 + 1)``, and ``step`` turns the model output (eps, or v
  for v-prediction models) into the denoised prediction the solver consumes;
- first noise is scaled by ``sqrt(1 + sigma^2)`` when sampling starts at the model's largest
  sigma (ComfyUI's "max denoise"), by ``sigma`` otherwise;
- a rectified-flow model (``prediction_type: flow``; SD3, Flux) is ComfyUI's CONST sampling:
  sigmas from ``FlowSigmas`` (``flow_shift`` kind, ``shift``), the model input unscaled, the
  denoised prediction ``x - velocity x sigma``, noising ``sigma x noise + (1 - sigma) x latent``,
  and the timesteps diffusers' flow schedulers give (sigma x 1000), which the families expect;
- the solver's own noise comes from the run's seed (``generator.initial_seed()``), as
  ComfyUI seeds it, never from the state the initial noise left the generator in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from nodes.ksampling.flow_sigmas import FlowSigmas
from nodes.ksampling.noise import SamplerNoise
from nodes.ksampling.schedules import ksampler_sigmas
from nodes.ksampling.sigmas import DiscreteSigmas
from nodes.ksampling.solvers import SOLVERS, Program, evaluation_sigmas


@dataclass
class KStepOutput:
    prev_sample: Any
    """The latents to evaluate the model at next (or, after the last call, the result)."""
    pred_original_sample: Any
    """The denoised prediction at this evaluation (what previews show)."""


class KSamplerScheduler:
    """One run of a ComfyUI sampler over a ComfyUI schedule (state: make one per run).

    Config keys: ``sampler``, ``schedule``, ``prediction_type``, the model's beta settings
    (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``,
    ``rescale_betas_zero_snr``; a flow model:
    ``flow_shift`` and ``shift`` instead), and KSamplerAdvanced's ``end_at_step`` (None: the
    end), ``full_denoise`` (set the last sigma to 0 after cutting at ``end_at_step``) and
    ``add_noise``.
    """

    def __init__(self, **config: Any) -> None:
        self.config = SimpleNamespace(**config)
        if config["sampler"] not in SOLVERS:
            raise ValueError(f"unknown sampler {config['sampler']!r}")
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "flow"):
            raise ValueError(
                f"ComfyUI's samplers take epsilon, v or flow models here, not {prediction!r}"
            )
        self.flow = prediction == "flow"
        self.table: Any = (
            FlowSigmas.make(config["flow_shift"], float(config["shift"]))
            if self.flow
            else DiscreteSigmas.from_config(config)
        )
        self.order = 1
        self.sigmas: Any = None
        self.timesteps: Any = None
        self._evaluations: list[Any] = []
        self._index = 0
        self._program: Program | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KSamplerScheduler:
        return cls(**config)

    # -- the schedule -----------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        config = self.config
        sigmas = ksampler_sigmas(self.table, config.schedule, config.sampler, num_inference_steps)
        end = getattr(config, "end_at_step", None)
        if end is not None and end < len(sigmas) - 1:
            sigmas = sigmas[: end + 1].clone()
            if getattr(config, "full_denoise", True):
                sigmas[-1] = 0
        self._plan(sigmas, device)

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start ``begin_index`` evaluations in (img2img): whole steps, as ``order`` promises.

        ``timesteps`` stays whole, as diffusers' schedulers keep it (the caller slices it)."""
        skipped, rest = divmod(begin_index, self.order)
        if rest:
            raise ValueError(f"start index {begin_index} is not a whole number of steps")
        if skipped:
            timesteps = self.timesteps
            self._plan(self.sigmas[skipped:], timesteps.device)
            self.timesteps = timesteps

    def _plan(self, sigmas: Any, device: Any) -> None:
        import torch

        self.sigmas = sigmas
        per_step = evaluation_sigmas(SOLVERS[self.config.sampler], sigmas)
        self._evaluations = [sigma for step in per_step for sigma in step]
        inner = {len(step) for step in per_step[:-1]} or {1}
        if len(inner) != 1:
            raise ValueError(f"sampler {self.config.sampler!r} takes uneven steps here")
        self.order = inner.pop()
        if self.flow:
            timesteps = [sigma * 1000 for sigma in self._evaluations]
        else:
            timesteps = [self.table.timestep(sigma) for sigma in self._evaluations]
        self.timesteps = torch.stack(timesteps) if timesteps else torch.zeros(0)
        self.timesteps = self.timesteps.to(device) if device is not None else self.timesteps
        self._index, self._program = 0, None

    # -- noise ------------------------------------------------------------------------------

    def _max_denoise(self) -> bool:
        first, largest = float(self.sigmas[0]), float(self.table.sigma_max)
        return math.isclose(largest, first, rel_tol=1e-5) or first > largest

    @property
    def init_noise_sigma(self) -> Any:
        if not getattr(self.config, "add_noise", True):
            return 0.0
        first = self.sigmas[0]
        if self.flow:
            return first
        return (1.0 + first**2) ** 0.5 if self._max_denoise() else first

    def add_noise(self, original_samples: Any, noise: Any, timesteps: Any) -> Any:
        """``original + noise x init_noise_sigma`` (ComfyUI's noise scaling; a flow model's
        ``sigma x noise + (1 - sigma) x original``)."""
        if not getattr(self.config, "add_noise", True):
            return original_samples
        scale = self.init_noise_sigma.to(original_samples.device, original_samples.dtype)
        if self.flow:
            return scale * noise + (1.0 - scale) * original_samples
        return noise * scale + original_samples

    # -- stepping ---------------------------------------------------------------------------

    def _sigma(self) -> Any:
        if self._index >= len(self._evaluations):
            raise RuntimeError("the sampler has already taken all its steps")
        return self._evaluations[self._index]

    def scale_model_input(self, sample: Any, timestep: Any = None) -> Any:
        if self.flow:
            return sample
        sigma = self._sigma().to(sample.device, sample.dtype)
        return sample / (sigma**2 + 1) ** 0.5

    def _denoised(self, model_output: Any, sample: Any, sigma: Any) -> Any:
        if self.flow:
            return sample - model_output * sigma
        if self.config.prediction_type == "v_prediction":
            return sample / (sigma**2 + 1) - model_output * sigma / (sigma**2 + 1) ** 0.5
        return sample - model_output * sigma

    def step(
        self, model_output: Any, timestep: Any, sample: Any, generator: Any = None
    ) -> KStepOutput:
        """Feed one guided model output to the solver; return where it evaluates next."""
        sigma = self._sigma().to(sample.device, sample.dtype)
        denoised = self._denoised(model_output, sample, sigma)
        if self._program is None:
            seed = None if generator is None else generator.initial_seed()
            sigmas = self.sigmas.to(sample.device, sample.dtype)
            self._program = SOLVERS[self.config.sampler](sample, sigmas, SamplerNoise(seed))
            next(self._program)  # its first request is the evaluation just made
        self._index += 1
        try:
            following, _, _ = self._program.send(denoised)
        except StopIteration as finished:
            following = finished.value
        return KStepOutput(prev_sample=following, pred_original_sample=denoised)
