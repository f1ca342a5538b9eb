"""Continue a trained demo model as a grown v2: attention added at levels that had none, the
U-Net and text encoder trained on, with more captions that name a position.

Run from the repository root (not run by CI; see ``nodes/demo/TRAINING.md``)::

    python -m nodes.demo.train_grow --grow-from nodes/demo/model/demo-sd \\
        --out /work/train_state/demo-v2 --attention-levels 0 --threads 1

Why grow rather than start over: a from-scratch v1 took 85 minutes on two idle cores, more than a
session has on the shared machine. ``nodes.demo.grow`` adds the 16x16 level's attention as an
exact identity, so step 0 is v1's model; the VAE is kept as it is (frozen), so the latent space,
and everything trained on it (the latent classifier), stay valid. The data stream is
``train_demo``'s with ``--position-share`` of its scenes naming a position
(``nodes.demo.scene_mix``); the objective, caption dropout, AdamW grouping, EMA and learning-rate
shape are ``train_demo``'s.

The run is long and the machine is shared, so it saves its whole state (``nodes.demo.run_state``:
weights, EMA, AdamW moments, the noise generator and the data stream's RNG; safetensors and JSON,
no pickle) to ``<out>/state`` every ``--save-every`` steps and continues from it when the same
command runs again; an interrupted run ends with the weights of an uninterrupted one. Every
``--eval-every`` steps it writes the EMA weights as a diffusers folder to
``<out>/checkpoints/step-N`` and measures them through nodeflow's own graph
(``nodes.demo.adherence``) on held-out captions, appending the figures to ``<out>/evals.jsonl``.
At ``--steps`` it writes the final model to ``<out>/demo-sd`` with its card.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nodes.demo.grow import attention_levels, grow_unet
from nodes.demo.position_levers import (
    POSITION_WORDS,
    high_noise_timesteps,
    layout_noise,
    layout_weights,
    load_start_weights,
    spread_token_rows,
)
from nodes.demo.run_state import (
    load_run_state,
    module_tensors,
    optimizer_tensors,
    python_rng_state,
    restore_module,
    restore_optimizer,
    restore_python_rng,
    save_run_state,
)
from nodes.demo.scene_mix import PositionBatcher, sample_mixed_scene
from nodes.demo.text_probe import attribute_separation
from nodes.demo.train_demo import (
    EMA,
    OBJECTIVES,
    DemoModels,
    adamw,
    choose_device,
    diffusion_step,
    load_base,
    lr_factor,
    noise_scheduler,
    parameter_count,
    reproducing_command,
    save_diffusers_folder,
    write_json,
)

__all__ = ["GrowRun", "evaluate_folder", "main", "parse_args"]

SAME_RUN = (
    "grow_from",
    "attention_levels",
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "ema",
    "seed",
    "position_share",
    "init_state",
    "init_weights",
    "high_noise_share",
    "high_noise_from",
    "spread_position_tokens",
    "layout_weight",
    "layout_noise",
    "objective",
    "v_gamma",
)
"""Arguments a resumed run must share with the saved one (the rest, such as ``--steps``,
``--threads`` or the evaluation settings, may change between sessions)."""
ADDED_LATER = {
    "init_state": "None",
    "init_weights": "ema",
    "high_noise_share": "0.0",
    "high_noise_from": "700",
    "spread_position_tokens": "None",
    "layout_weight": "None",
    "layout_noise": "0.0",
    "objective": "epsilon",
    "v_gamma": "None",
}
"""Defaults of ``SAME_RUN`` arguments newer than some saved states (the demo-v2 run's), which
such a state was made with, so it still resumes."""
REPORTED = ("color_ok", "shape_ok", "position_ok", "caption_ok", "background_ok", "count_ok")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grow-from", type=Path, required=True, help="a demo diffusers folder")
    parser.add_argument("--out", type=Path, required=True, help="state, checkpoints, final model")
    parser.add_argument("--attention-levels", type=int, nargs="+", default=[0],
                        help="U-Net levels to add attention at (0 = 16x16)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=8000, help="U-Net + text encoder steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay; 0 disables")
    parser.add_argument(
        "--position-share",
        type=float,
        default=0.4,
        help="share of training scenes that name a position (the dataset's: 1/6)",
    )
    parser.add_argument("--init-state", type=Path,
                        help="start from this saved run state (another run's <out>/state, read "
                             "only) instead of the grown base")  # fmt: skip
    parser.add_argument("--init-weights", choices=("ema", "train"), default="ema",
                        help="which weights of --init-state to start from")  # fmt: skip
    parser.add_argument("--high-noise-share", type=float, default=0.0,
                        help="share of timesteps drawn from --high-noise-from..999 only "
                             "(where layout, so position, is decided)")  # fmt: skip
    parser.add_argument("--high-noise-from", type=int, default=700)
    parser.add_argument("--layout-weight", type=float, metavar="CAP",
                        help="weigh each picture's loss by 1/SNR(t), clamped to 1..CAP, so the "
                             "noisiest timesteps count what a misplaced shape costs")  # fmt: skip
    parser.add_argument("--layout-noise", type=float, default=0.0, metavar="STRENGTH",
                        help="add coarse (1x1, 2x2, 4x4) noise fields of this deviation to the "
                             "training noise, hiding the layout x_t leaks at t=999")  # fmt: skip
    parser.add_argument("--spread-position-tokens", type=float, metavar="NORM",
                        help="at the start, make the five position words' token rows orthogonal "
                             "and this long (the caption words' are ~0.25)")  # fmt: skip
    parser.add_argument("--objective", choices=OBJECTIVES, default="epsilon",
                        help="epsilon: SD 1.x's; v-zero-snr: zero terminal SNR, v-prediction, "
                             "trailing steps, plain v loss (Lin et al. 2024); the saved folder's "
                             "scheduler config carries it")  # fmt: skip
    parser.add_argument("--v-gamma", type=float, metavar="GAMMA",
                        help="v-zero-snr only: weight the v loss by min(1, GAMMA / (SNR + 1)), "
                             "capping the nearly-noiseless steps' weight as Min-SNR does "
                             "(train_demo.diffusion_loss); default: the plain v loss")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=1000, help="0: only at the end")
    parser.add_argument("--eval-samples", type=int, default=50, help="held-out captions; 0 skips")
    parser.add_argument("--eval-positioned", type=int, default=30,
                        help="extra held-out captions that all name a position")  # fmt: skip
    parser.add_argument("--eval-cfg", type=float, nargs="+", default=[4.0, 7.5])
    parser.add_argument("--stop-at", type=int, help="save and stop after this step")
    parser.add_argument("--fp32", action="store_true", help="save the models in fp32")
    args = parser.parse_args(argv)
    if args.v_gamma is not None and args.objective != "v-zero-snr":
        parser.error("--v-gamma weights the v loss: it needs --objective v-zero-snr")
    return args


def _log(message: str) -> None:
    print(message, flush=True)


def _args_json(args: argparse.Namespace) -> dict[str, str]:
    return {k: str(v) for k, v in vars(args).items()}


def evaluate_folder(
    folder: Path, samples: int, positioned: int, cfgs: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """Adherence of a saved model through nodeflow's txt2img graph (``AdherenceRunner``, euler
    20 steps, Denoise seed ``seed + i``): on the benchmark's first ``samples`` held-out captions
    and, since only about one in six of those names a position, on ``positioned`` held-out
    captions that all do. Per CFG: ``{"held_out": {check: accuracy}, "positioned": {...}}``;
    and ``text_separation`` (``nodes.demo.text_probe``): whether the text encoder tells the
    position words apart at all."""
    from nodes.demo.adherence import AdherenceRunner, held_out_scenes, summarize

    rng = random.Random(seed + 1)
    sets = {
        "held_out": held_out_scenes(samples, seed),
        "positioned": [sample_mixed_scene(rng, 1.0, split="held_out") for _ in range(positioned)],
    }
    runner = AdherenceRunner(model=str(folder.resolve()))
    results: dict[str, Any] = {}
    try:
        for cfg in cfgs:
            results[f"{cfg:g}"] = {
                name: {k: summarize(runner.run(scenes, cfg=cfg, seed=seed)).get(k)
                       for k in REPORTED}
                for name, scenes in sets.items() if scenes
            }  # fmt: skip
    finally:
        runner.close()
    from transformers import CLIPTextModel

    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    results["text_separation"] = attribute_separation(encoder.eval())
    results["seconds"] = runner.seconds
    results["pictures"] = len(cfgs) * sum(len(scenes) for scenes in sets.values())
    return results


class GrowRun:
    """One grown run's mutable state, saved and restored as a whole."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        base = load_base(args.grow_from, device)
        self.base_levels = attention_levels(base.unet.config)
        unet = grow_unet(base.unet, args.attention_levels, seed=args.seed).to(device)
        self.models = DemoModels(base.vae, base.text_encoder, unet)
        for module in (self.models.unet, self.models.text_encoder):
            module.requires_grad_(True).train()
        self.generator = torch.Generator(device).manual_seed(args.seed)
        self.batches = PositionBatcher(args.seed + 500, position_share=args.position_share)
        self.optimizer, self.parameters = adamw(
            (self.models.unet, self.models.text_encoder), args.lr, args.weight_decay
        )
        self.started_from = None
        if args.init_state is not None:
            modules = {"unet": self.models.unet, "text_encoder": self.models.text_encoder}
            self.started_from = load_start_weights(
                args.init_state, modules, self.parameters, args.init_weights
            )
        if args.spread_position_tokens is not None:
            spread_token_rows(self.models.text_encoder, POSITION_WORDS, args.spread_position_tokens)
        self.ema = EMA(self.parameters, args.ema) if args.ema > 0 else None
        self.step, self.seconds, self.running = 0, 0.0, None
        self.evals: list[dict[str, Any]] = []

    @property
    def state_dir(self) -> Path:
        return self.args.out / "state"

    def save(self) -> None:
        tensors = module_tensors("unet", self.models.unet)
        tensors |= module_tensors("text_encoder", self.models.text_encoder)
        moments, adam_steps = optimizer_tensors(self.optimizer)
        tensors |= moments
        if self.ema is not None:
            for i, shadow in enumerate(self.ema.shadow):
                tensors[f"ema.{i}"] = shadow.detach().cpu().contiguous()
        tensors["rng.noise"] = self.generator.get_state()
        meta = {
            "step": self.step,
            "adam_steps": adam_steps,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "rng": python_rng_state(self.batches.rng),
            "seconds": self.seconds,
            "running_loss": self.running,
            "evals": self.evals,
            "args": _args_json(self.args),
        }
        save_run_state(self.state_dir, tensors, meta)

    def restore(self) -> bool:
        """Continue the saved run in ``<out>/state``, if any; refuse one made differently."""
        saved = load_run_state(self.state_dir)
        if saved is None:
            return False
        tensors, meta = saved
        now = _args_json(self.args)
        saved_args = ADDED_LATER | meta["args"]
        changed = [k for k in SAME_RUN if saved_args.get(k) != now[k]]
        if changed:
            detail = ", ".join(f"--{k.replace('_', '-')} {saved_args.get(k)} -> {now[k]}"
                               for k in changed)  # fmt: skip
            raise SystemExit(
                f"{self.state_dir} holds a run made with other settings ({detail}); "
                "use another --out or the saved settings"
            )
        restore_module("unet", self.models.unet, tensors)
        restore_module("text_encoder", self.models.text_encoder, tensors)
        restore_optimizer(self.optimizer, tensors, meta["adam_steps"])
        if self.ema is not None:
            for i, shadow in enumerate(self.ema.shadow):
                shadow.copy_(tensors[f"ema.{i}"])
            self.ema.updates = int(meta["ema_updates"])
        self.generator.set_state(tensors["rng.noise"])
        restore_python_rng(self.batches.rng, meta["rng"])
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        self.running, self.evals = meta["running_loss"], list(meta["evals"])
        return True

    def write_model(self, folder: Path) -> dict[str, int]:
        """The EMA weights (the ones a finished run ships) as a diffusers folder, with a
        ``training_summary.json``; the training weights are put back afterwards."""
        backup = [p.detach().clone() for p in self.parameters]
        if self.ema is not None:
            self.ema.copy_to(self.parameters)
        try:
            files = save_diffusers_folder(
                self.models, folder, half=not self.args.fp32, objective=self.args.objective
            )
        finally:
            with torch.no_grad():
                for param, saved in zip(self.parameters, backup, strict=True):
                    param.copy_(saved)
        summary = self.summary()
        summary["file_bytes"] = files
        write_json(folder / "training_summary.json", summary)
        return files

    def summary(self) -> dict[str, Any]:
        base_summary = self.args.grow_from / "training_summary.json"
        return {
            "step": self.step,
            "minutes": self.seconds / 60,
            "seconds_per_step": self.seconds / max(1, self.step),
            "parameters": {
                "unet": parameter_count(self.models.unet),
                "text_encoder": parameter_count(self.models.text_encoder),
                "vae": parameter_count(self.models.vae),
            },
            "attention_levels": {"base": self.base_levels, "added": self.args.attention_levels},
            "started_from": None if self.started_from is None else {
                "state": str(self.args.init_state), "step": self.started_from,
                "weights": self.args.init_weights},
            "evals": self.evals,
            "args": _args_json(self.args),
            "command": reproducing_command("nodes.demo.train_grow",
                                           _args_json(self.args) | {"stop_at": "None"}),
            "grown_from": json.loads(base_summary.read_text()) if base_summary.is_file() else None,
        }  # fmt: skip

    def checkpoint(self) -> None:
        """Write ``checkpoints/step-N`` and, with ``--eval-samples``, measure it."""
        args = self.args
        folder = args.out / "checkpoints" / f"step-{self.step:06d}"
        self.write_model(folder)
        if not (args.eval_samples or args.eval_positioned):
            return
        figures = evaluate_folder(folder, args.eval_samples, args.eval_positioned, args.eval_cfg)
        record = {"step": self.step, "minutes": self.seconds / 60, **figures}
        self.evals.append(record)
        with (args.out / "evals.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        _log(f"eval step {self.step}: {json.dumps(record)}")
        write_json(folder / "training_summary.json", self.summary())

    def position_levers(
        self, pixels_shape: Sequence[int], scheduler: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """This batch's timesteps, loss weights and noise under the position levers
        (``nodes.demo.position_levers``); ``None`` for each the run leaves to ``train_demo``, so a
        run without them draws exactly what ``train_demo`` draws."""
        args = self.args
        timesteps = weights = noise = None
        if args.high_noise_share > 0 or args.layout_weight is not None:
            timesteps = high_noise_timesteps(
                pixels_shape[0],
                scheduler.config.num_train_timesteps,
                args.high_noise_share,
                args.high_noise_from,
                self.generator,
                self.device,
            )
            if args.layout_weight is not None:
                weights = layout_weights(timesteps, scheduler.alphas_cumprod, args.layout_weight)
        if args.layout_noise > 0:
            vae = self.models.vae.config
            factor = 2 ** (len(vae.block_out_channels) - 1)
            shape = (pixels_shape[0], vae.latent_channels,
                     pixels_shape[2] // factor, pixels_shape[3] // factor)  # fmt: skip
            noise = layout_noise(shape, args.layout_noise, self.generator, self.device)
        return timesteps, weights, noise

    def train(self) -> bool:
        """Train to ``--steps``; False when ``--stop-at`` stopped it first."""
        args, models = self.args, self.models
        scheduler = noise_scheduler(args.objective)
        # Lin et al. train v plainly: Min-SNR's v weight is 0 at SNR 0, the step this is for
        snr_gamma = 5.0 if args.objective == "epsilon" else None
        started = time.perf_counter() - self.seconds
        while self.step < args.steps:
            for group in self.optimizer.param_groups:
                group["lr"] = args.lr * lr_factor(self.step, args.steps, args.warmup)
            pixels, ids, _ = self.batches(args.batch_size)
            timesteps, weights, noise = self.position_levers(pixels.shape, scheduler)
            loss = diffusion_step(
                models,
                scheduler,
                pixels.to(self.device),
                ids,
                self.optimizer,
                self.parameters,
                generator=self.generator,
                timesteps=timesteps,
                sample_weights=weights,
                noise=noise,
                snr_gamma=snr_gamma,
                v_gamma=args.v_gamma,
            )
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
            self.seconds = time.perf_counter() - started
            if self.step % args.log_every == 0 or self.step == args.steps:
                per_step = self.seconds / self.step
                eta = per_step * (args.steps - self.step) / 60
                _log(f"grow {self.step:6d}  loss {self.running:.5f}  {per_step:.3f} s/step  "
                     f"eta {eta:.1f} min")  # fmt: skip
            if self.step % args.save_every == 0 or self.step == args.steps:
                self.save()
            if args.eval_every and self.step % args.eval_every == 0 and self.step < args.steps:
                paused = time.perf_counter()
                self.checkpoint()
                started += time.perf_counter() - paused  # evaluation is not training time
                self.save()
            if args.stop_at is not None and self.step >= args.stop_at:
                self.save()
                return False
        return True


MODEL_CARD = """# nodeflow demo model v2 (grown)

The v1 demo model ({base}) grown by ``nodes/demo/train_grow.py``: cross-attention added to U-Net
level(s) {added} (level 0 = the 16x16 latents; v1 had attention at {had}), each new transformer
block starting as the identity, then the U-Net and text encoder trained {steps} more steps at batch
{batch} (lr {lr}, EMA {ema}) on captions of which {share:.0%} name a position. The VAE is v1's,
unchanged. {minutes:.1f} minutes of training on {device} at {threads} thread(s).

Parameters: U-Net {unet:,}, text encoder {text:,}, VAE {vae:,}.

Held-out adherence during the run (``<out>/evals.jsonl``; nodeflow's txt2img graph, euler 20):

{evals}

Reproduce (the run saves its state; the same command continues it):

```
{command}
```
"""


def eval_table(evals: Sequence[dict[str, Any]]) -> str:
    """The checkpoints' figures as a markdown table (held-out set; position on both sets)."""
    lines = [
        "| step | CFG | shape color | shape | whole caption | position (held-out) "
        "| position (positioned set) |",
        "|---|---|---|---|---|---|---|",
    ]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    for record in evals:
        for cfg, sets in record.items():
            if not isinstance(sets, dict):
                continue
            held, positioned = sets.get("held_out", {}), sets.get("positioned", {})
            lines.append(
                f"| {record['step']} | {cfg} | {pct(held.get('color_ok'))} "
                f"| {pct(held.get('shape_ok'))} | {pct(held.get('caption_ok'))} "
                f"| {pct(held.get('position_ok'))} | {pct(positioned.get('position_ok'))} |"
            )
    return "\n".join(lines)


def finish(run: GrowRun) -> dict[str, Any]:
    """The final model in ``<out>/demo-sd``, measured (with ``--eval-samples``), with its card."""
    args = run.args
    folder = args.out / "demo-sd"
    if not run.evals or run.evals[-1]["step"] != run.step:
        run.checkpoint()
    run.write_model(folder)
    summary = run.summary()
    parameters = summary["parameters"]
    (folder / "README.md").write_text(
        MODEL_CARD.format(
            base=args.grow_from, added=args.attention_levels, had=run.base_levels,
            steps=run.step, batch=args.batch_size, lr=args.lr, ema=args.ema or "off",
            share=args.position_share, minutes=run.seconds / 60, device=run.device.type,
            threads=args.threads, unet=parameters["unet"], text=parameters["text_encoder"],
            vae=parameters["vae"], evals=eval_table(run.evals) if run.evals else "not measured",
            command=summary["command"],
        ),
        encoding="utf-8",
    )  # fmt: skip
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Train (or continue) and write the final model; None when ``--stop-at`` stopped it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = GrowRun(args, choose_device(args.device))
    if run.restore():
        _log(f"resumed at step {run.step}")
    else:
        _log(f"grown {args.grow_from}: attention added at levels {args.attention_levels}")
    if not run.train():
        _log(f"stopped at step {run.step}; run the same command without --stop-at to continue")
        return None
    return finish(run)


if __name__ == "__main__":
    main()
