"""Distil the demo model into an LCM-LoRA: latent consistency distillation on the CPU, resumable.

Run from the repository root (not run by CI)::

    python -m nodes.demo.train_lcm --base nodes/demo/model/demo-sd --out build/demo-lcm --steps 3000
    python -m nodes.demo.train_lcm --base nodes/demo/model/demo-sd --out build/demo-lcm --steps 6000
        # the second call resumes from build/demo-lcm/state.* and trains to step 6000

As in the LCM-LoRA paper (Luo et al. 2023, after Song et al.'s consistency distillation): the
teacher is the frozen demo U-Net with classifier-free guidance at a scale drawn from
``[--guidance-min, --guidance-max]``; a DDIM step of the teacher goes from a skipped timestep
``t`` to ``t - k`` (``k = 1000 / --ddim-steps``, so 50 solver steps skip 20); the student is the
demo U-Net plus trainable LoRA pairs, parameterised as a consistency function
``c_skip(t) x + c_out(t) x0(t)`` with LCM's boundary scalings (the ones ``LCMScheduler`` samples
with); the target is the same function under an EMA of the LoRA pairs (``--ema``) at ``t - k``
on the teacher's DDIM result; the loss is the pseudo-Huber distance. The LoRA is written in
kohya layout (``nodes.demo.train_lora.kohya_state``), so ``LoadLoRA`` reads it, and inference
is the ``lcm`` scheduler at guidance 1 (the guidance is distilled into the LoRA).

The teacher's objective is its folder's (``train_demo.objective_of``): epsilon on SD 1.x's
schedule, or v-prediction with zero terminal SNR (``train_grow --objective v-zero-snr``). The
noising, the DDIM step and the student's ``x0`` all use that schedule's alphas-cumprod, and a
v-prediction U-Net's output is turned into ``x0 = alpha x - sigma v`` and ``eps = sigma x +
alpha v`` (as diffusers' LCM distillation script does), which divide by nothing: at t = 999 of a
zero-SNR schedule alpha is 0, ``x0 = -v`` and ``eps = x``. Only epsilon divides by alpha (``x0 =
(x - sigma eps) / alpha``), and only on SD's schedule, whose alpha is 0.068 at t = 999;
``objective_of`` refuses epsilon with zero SNR. The run folder gets the scheduler the LoRA samples
with (``<out>/scheduler/scheduler_config.json``, an ``LCMScheduler`` config with the objective's
``prediction_type``, ``rescale_betas_zero_snr`` and ``timestep_spacing``), and the LoRA file
names its objective in its metadata (``nodeflow_objective``).

Every ``--save-every`` steps the run's whole state goes to ``<out>/state.safetensors`` (online
and EMA pairs, AdamW moments) and ``<out>/state.json`` (step, data and noise RNG states), no
pickle; starting again with the same ``--out`` continues from there, and the steps after a
resume are the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nodes.demo.lora_layers import TARGETS, ConvLoraPair, LoraPair, target_names
from nodes.demo.train_demo import (
    Batcher,
    choose_device,
    load_base,
    noise_scheduler,
    objective_of,
    scheduler_overrides,
)
from nodes.demo.train_lora import kohya_state

__all__ = [
    "boundary_scalings",
    "ddim_solver_timesteps",
    "lcm_scheduler_config",
    "learning_rate",
    "main",
    "x0_and_eps",
]

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0
"""LCM's boundary-condition constants, as ``LCMScheduler`` has them (``timestep_scaling``)."""


def boundary_scalings(timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` at ``timesteps``: c_skip -> 1 and c_out -> 0 as t -> 0, so the
    consistency function is the identity at the clean end (its boundary condition)."""
    scaled = timesteps.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


def ddim_solver_timesteps(train_steps: int, solver_steps: int) -> torch.Tensor:
    """The solver's timesteps ``k - 1, 2k - 1, ..., train_steps - 1``: the ones LCMScheduler's
    ``original_inference_steps`` grid samples from, so training and sampling share one grid."""
    skip = train_steps // solver_steps
    return torch.arange(1, solver_steps + 1) * skip - 1


def lcm_scheduler_config(objective: str, solver_steps: int = 50) -> Any:
    """The ``LCMScheduler`` a LoRA distilled from a base trained on ``objective`` samples with
    (nodeflow's ``lcm`` scheduler builds the same from the base's config): SD 1.x's betas, the
    objective's keys (``prediction_type``, ``rescale_betas_zero_snr``, ``timestep_spacing``;
    ``train_demo.scheduler_overrides``) and the solver's grid (``original_inference_steps``).
    LCM's grid, ``k - 1, ..., 999``, ends at t = 999, so under zero terminal SNR sampling starts
    from pure noise whatever the spacing."""
    from diffusers import LCMScheduler

    from nodes.tiny import family_config

    config = family_config("sd1", "scheduler") | scheduler_overrides(objective)
    accepted = inspect.signature(LCMScheduler.__init__).parameters  # not PNDM's skip_prk_steps
    config = {k: v for k, v in config.items() if k in accepted}
    return LCMScheduler.from_config(config | {"original_inference_steps": solver_steps})


class DualLora(nn.Module):
    """Online LoRA pairs (trained) and their EMA (the target), both on one frozen U-Net; which
    one the U-Net's hooks add is ``mode``: ``"online"``, ``"ema"`` or ``"off"`` (the teacher)."""

    def __init__(
        self, unet: nn.Module, rank: int, alpha: float, targets: Sequence[str] = TARGETS
    ) -> None:
        super().__init__()
        unet.requires_grad_(False)
        online: dict[str, nn.Module] = {}
        ema: dict[str, nn.Module] = {}
        ends = tuple("." + t for t in targets)
        for name, module in unet.named_modules():
            if not name.endswith(ends):
                continue
            if isinstance(module, nn.Linear):
                kind: Any = LoraPair
            elif isinstance(module, nn.Conv2d):
                kind = ConvLoraPair
            else:
                continue
            online[name] = kind(module, rank, alpha).to(module.weight.device)
            ema[name] = kind(module, rank, alpha).to(module.weight.device)
            ema[name].load_state_dict(online[name].state_dict())
            ema[name].requires_grad_(False)
            module.register_forward_hook(self._hook(name))
        if not online:
            raise ValueError(f"no {tuple(targets)} layers in the U-Net")
        self.names = sorted(online)
        self.online = nn.ModuleDict({n.replace(".", "/"): online[n] for n in self.names})
        self.ema = nn.ModuleDict({n.replace(".", "/"): ema[n] for n in self.names})
        self.mode = "online"

    def _hook(self, name: str) -> Any:
        key = name.replace(".", "/")

        def hook(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> Any:
            if self.mode == "off":
                return output
            pairs = self.online if self.mode == "online" else self.ema
            return output + pairs[key].delta(args[0])

        return hook

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for key in self.online:
            for target, source in zip(
                self.ema[key].parameters(), self.online[key].parameters(), strict=True
            ):
                target.lerp_(source.detach(), 1 - decay)

    def pairs(self) -> dict[str, Any]:
        return {name: self.online[name.replace(".", "/")] for name in self.names}


def x0_and_eps(
    output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor, velocity: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean latents and the noise that a U-Net ``output`` at ``x``, timesteps ``t`` predicts
    under the schedule ``alphas`` (cumulative): from epsilon, ``x0 = (x - sigma eps) / alpha``;
    from v (``velocity``), ``x0 = alpha x - sigma v`` and ``eps = sigma x + alpha v``, with no
    division, so exact where alpha is 0 (the last timestep under zero terminal SNR)."""
    alpha = alphas[t].sqrt()[:, None, None, None]
    sigma = (1 - alphas[t]).sqrt()[:, None, None, None]
    if velocity:
        return alpha * x - sigma * output, sigma * x + alpha * output
    return (x - sigma * output) / alpha, output


def distillation_loss(
    unet: nn.Module,
    lora: DualLora,
    latents: torch.Tensor,
    context: torch.Tensor,
    empty: torch.Tensor,
    alphas: torch.Tensor,
    solver: torch.Tensor,
    args: argparse.Namespace,
    generator: torch.Generator,
    velocity: bool = False,
) -> torch.Tensor:
    """One batch's consistency distillation loss (see the module docstring); ``alphas`` is the
    teacher's schedule (cumulative) and ``velocity`` whether it predicts v (else epsilon)."""
    batch, device = latents.shape[0], latents.device
    skip = int(solver[1] - solver[0])
    index = torch.randint(0, len(solver), (batch,), generator=generator, device=device)
    start = solver.to(device)[index]
    previous = (start - skip).clamp(min=0)
    noise = torch.randn(latents.shape, generator=generator, device=device)
    a = alphas[start].sqrt()[:, None, None, None]
    s = (1 - alphas[start]).sqrt()[:, None, None, None]
    noisy = a * latents + s * noise
    spread = args.guidance_max - args.guidance_min
    scale = args.guidance_min + spread * torch.rand((batch,), generator=generator, device=device)
    scale = scale[:, None, None, None]

    lora.mode = "online"
    c_skip, c_out = boundary_scalings(start)
    output = unet(noisy, start, encoder_hidden_states=context).sample
    prediction = c_skip * noisy + c_out * x0_and_eps(output, noisy, start, alphas, velocity)[0]

    with torch.no_grad():
        lora.mode = "off"  # the teacher: the demo U-Net, guided
        both = unet(
            torch.cat([noisy, noisy]), torch.cat([start, start]),
            encoder_hidden_states=torch.cat([context, empty.expand_as(context)]),
        ).sample  # fmt: skip
        cond, uncond = both.chunk(2)
        # guided in the U-Net's own output; x0 and eps are affine in it, so this is guiding each
        guided = uncond + scale * (cond - uncond)
        x0_teacher, eps_teacher = x0_and_eps(guided, noisy, start, alphas, velocity)
        a_prev = alphas[previous].sqrt()[:, None, None, None]
        s_prev = (1 - alphas[previous]).sqrt()[:, None, None, None]
        solved = a_prev * x0_teacher + s_prev * eps_teacher  # one DDIM step, t -> t - k
        lora.mode = "ema"  # the target: the EMA LoRA at t - k
        c_skip_prev, c_out_prev = boundary_scalings(previous)
        output = unet(solved, previous, encoder_hidden_states=context).sample
        x0_target = x0_and_eps(output, solved, previous, alphas, velocity)[0]
        target = c_skip_prev * solved + c_out_prev * x0_target
    lora.mode = "online"
    huber = args.huber_c
    return (((prediction.float() - target.float()) ** 2 + huber**2).sqrt() - huber).mean()


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """The rate for ``step`` (0-based): ``--lr`` throughout, or cosine-decayed to ``--lr-final``
    at ``--steps``, so a constant-rate run's last LoRA is not its noisiest. A function of the step
    alone, so a resumed run takes the rates an uninterrupted one would have."""
    if args.lr_final is None:
        return args.lr
    progress = min(1.0, step / max(1, args.steps))
    return args.lr_final + (args.lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the demo model folder (teacher)")
    parser.add_argument("--out", type=Path, required=True, help="the run folder (resumed if any)")
    parser.add_argument("--steps", type=int, default=3000, help="train until this step")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=8.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--lr-final", type=float, default=None,
        help="cosine-decay the rate from --lr to this at --steps (default: constant --lr)",
    )  # fmt: skip
    parser.add_argument("--ema", type=float, default=0.95, help="EMA decay of the target")
    parser.add_argument("--ddim-steps", type=int, default=50, help="the DDIM solver's grid")
    parser.add_argument("--guidance-min", type=float, default=5.0)
    parser.add_argument("--guidance-max", type=float, default=9.0)
    parser.add_argument("--huber-c", type=float, default=0.001)
    parser.add_argument(
        "--targets", choices=("attention", "all"), default="attention",
        help="attention: the attention and feed-forward linears; all: also the ResNet blocks",
    )  # fmt: skip
    parser.add_argument(
        "--keep-saves", action="store_true",
        help="also keep each save's LoRA as lora-<step>.safetensors, to score them all",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=25)
    return parser.parse_args(argv)


def _save(
    out: Path,
    step: int,
    lora: DualLora,
    optimizer: Any,
    batches: Batcher,
    generator: torch.Generator,
    args: argparse.Namespace,
    seconds: float,
    objective: str = "epsilon",
) -> None:
    """The whole run state, as tensors and JSON (no pickle), written then renamed into place;
    the LoRA's metadata names the teacher's objective (the schedule it samples with)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("online", lora.online), ("ema", lora.ema)):
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    moments: dict[str, Any] = {}
    for i, param in enumerate(params):
        state = optimizer.state.get(param, {})
        if state:
            tensors[f"adam.{i}.exp_avg"] = state["exp_avg"].cpu().contiguous()
            tensors[f"adam.{i}.exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
            moments[str(i)] = float(state["step"])
    tensors["rng.noise"] = generator.get_state()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "state.safetensors.tmp")
    meta = {
        "step": step,
        "adam_steps": moments,
        "data_rng": batches.rng.getstate(),
        "seconds": seconds,
        "objective": objective,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "state.json.tmp").write_text(json.dumps(meta))
    (out / "state.safetensors.tmp").replace(out / "state.safetensors")
    (out / "state.json.tmp").replace(out / "state.json")
    metadata = {"format": "pt", "nodeflow_training": json.dumps(meta["args"] | {"step": step}),
                "nodeflow_objective": objective}  # fmt: skip
    weights = kohya_state(lora.pairs())
    save_file(weights, out / "demo-lcm.safetensors", metadata=metadata)
    if args.keep_saves:
        save_file(weights, out / f"lora-{step:05d}.safetensors", metadata=metadata)


def _resume(
    out: Path,
    lora: DualLora,
    optimizer: Any,
    batches: Batcher,
    generator: torch.Generator,
    objective: str = "epsilon",
) -> tuple[int, float]:
    """Restore a saved state; returns (step, seconds so far), (0, 0) for a new run. A run saved
    on a teacher of another objective is refused: continuing it would distil the old LoRA
    against the new schedule and label it with the new objective."""
    if not (out / "state.json").is_file():
        return 0, 0.0
    meta = json.loads((out / "state.json").read_text())
    saved = meta.get("objective", "epsilon")  # states older than the key were all epsilon
    if saved != objective:
        raise ValueError(
            f"{out / 'state.json'}: this run was distilled from a {saved!r} teacher; --base is "
            f"{objective!r}. Use another --out for a new run."
        )
    tensors = load_file(out / "state.safetensors")
    for prefix, module in (("online", lora.online), ("ema", lora.ema)):
        module.load_state_dict(
            {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, step in meta["adam_steps"].items():
        param = params[int(index)]
        optimizer.state[param] = {
            "step": torch.tensor(step, dtype=torch.float32),
            "exp_avg": tensors[f"adam.{index}.exp_avg"].to(param.device),
            "exp_avg_sq": tensors[f"adam.{index}.exp_avg_sq"].to(param.device),
        }
    version, state, gauss = meta["data_rng"]
    batches.rng.setstate((version, tuple(state), gauss))
    generator.set_state(tensors["rng.noise"])
    return int(meta["step"]), float(meta["seconds"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    torch.manual_seed(args.seed)
    objective = objective_of(args.base)
    models = load_base(args.base, device)
    lora = DualLora(models.unet, args.rank, args.alpha, target_names(args.targets))
    optimizer = torch.optim.AdamW(lora.online.parameters(), lr=args.lr, weight_decay=0.0)
    batches = Batcher(args.seed + 500, dropout=0.0)
    generator = torch.Generator(device).manual_seed(args.seed)
    step, seconds = _resume(args.out, lora, optimizer, batches, generator, objective)
    teacher = noise_scheduler(objective)
    alphas = teacher.alphas_cumprod.to(device)
    velocity = teacher.config.prediction_type == "v_prediction"
    lcm_scheduler_config(objective, args.ddim_steps).save_pretrained(args.out / "scheduler")
    solver = ddim_solver_timesteps(len(alphas), args.ddim_steps)
    with torch.no_grad():
        empty = models.text_encoder(batches.tokens([""]).to(device))[0]
    started = time.perf_counter() - seconds
    first, losses = step, []
    while step < args.steps:
        pixels, ids, _ = batches(args.batch_size)
        with torch.no_grad():
            posterior = models.vae.encode(pixels.to(device)).latent_dist
            latents = posterior.sample(generator) * models.vae.config.scaling_factor
            context = models.text_encoder(ids.to(device))[0]
        loss = distillation_loss(
            models.unet, lora, latents, context, empty, alphas, solver, args, generator, velocity
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora.online.parameters(), 1.0)
        optimizer.step()
        lora.update_ema(args.ema)
        step += 1
        losses.append(float(loss.detach()))
        if step % args.log_every == 0 or step == args.steps:
            per_step = (time.perf_counter() - started - seconds) / (step - first)
            print(f"lcm {step:6d}  loss {losses[-1]:.5f}  {per_step:.3f} s/step", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            _save(args.out, step, lora, optimizer, batches, generator, args,
                  time.perf_counter() - started, objective)  # fmt: skip
    summary = {
        "step": step,
        "objective": objective,
        "modules": len(lora.names),
        "minutes": (time.perf_counter() - started) / 60,
        "last_losses": losses[-5:],
        "lora": str(args.out / "demo-lcm.safetensors"),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
