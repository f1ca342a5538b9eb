"""Prompt adherence of a demo model, measured through nodeflow's own nodes.

Held-out captions (``nodes.demo.dataset.is_held_out``) are rendered by the standard txt2img graph
(LoadCheckpoint, [LoadLoRA,] TextEncode positive and negative "", Scheduler, CFG, EmptyLatent,
Denoise, VAEDecode) and every picture is scored by rule (``nodes.demo.evaluate.score``).

Both the benchmark (``tests/benchmarks/bench_adherence.py``, N >= 200) and the CI test
(``tests/nodes/test_demo_adherence.py``, a handful of captions) call this module, so the floor the
test asserts is the same measurement the benchmark reports, not a look-alike: a regression in any
node on that path (text encoding, guidance, scheduler, sampling, decoding, LoRA) lowers both.

One ``Executor`` renders every picture: the model loads once, each caption is encoded once (the
output cache keeps the TextEncode results across runs), and changing only the CFG scale or LoRA
strength re-runs only the nodes downstream of it. Each caption gets its own seed (``seed +
index``), the same at every CFG scale and strength, so the comparisons between settings are
paired: the same starting noise, only the setting differs.

Like the rest of ``nodes.demo`` this is not imported by the nodes; torch and nodeflow's executor
are imported when a runner is made, so importing the module stays cheap.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow
from nodes.demo.dataset import IMAGE_SIZE, Scene, caption, sample_scene
from nodes.demo.evaluate import score

__all__ = [
    "CHECKS",
    "DEFAULT_CFG",
    "DEFAULT_SCHEDULER",
    "DEFAULT_STEPS",
    "AdherenceRunner",
    "Sample",
    "accuracy",
    "adherence_workflow",
    "held_out_scenes",
    "mean_outline",
    "summarize",
]

DEFAULT_CFG = 7.5
"""The CFG node's default scale, and the scale TRAINING.md sets the 90% targets at."""
DEFAULT_STEPS = 20
DEFAULT_SCHEDULER = "euler"
CHECKS = (
    "shape_and_color_ok",
    "background_ok",
    "shape_ok",
    "color_ok",
    "count_ok",
    "size_ok",
    "position_ok",
    "caption_ok",
    "style_ok",
)
"""``score``'s flags, in the order the reports list them (``position_ok`` is None for captions
that name no position; those pictures do not count towards its accuracy)."""


def held_out_scenes(n: int, seed: int = 0) -> list[Scene]:
    """The first ``n`` held-out plain scenes of a ``random.Random(seed)`` stream.

    The same draw as ``train_demo.quick_adherence``, so the model card's quick figure and this
    measurement start from the same captions. Held-out (shape, color, background) triples never
    occur in training: the score measures composition of known concepts, not memory.
    """
    rng = random.Random(seed)
    return [sample_scene(rng, split="held_out") for _ in range(n)]


def adherence_workflow(
    prompt: str,
    *,
    model: str,
    cfg: float = DEFAULT_CFG,
    steps: int = DEFAULT_STEPS,
    scheduler: str = DEFAULT_SCHEDULER,
    seed: int = 0,
    batch_size: int = 1,
    lora: str | None = None,
    strength: float = 1.0,
    shift: float = 0.0,
    rescale: float = 0.0,
) -> Workflow:
    """The standard txt2img graph for one caption (target node ``decode``), LoRA optional.

    Node ids and settings other than the prompt, scale, seed and strength are fixed, so between
    two runs on one executor only what changed (and what depends on it) runs again.
    """
    b = WorkflowBuilder()
    checkpoint = b.add("LoadCheckpoint", id="model", path=model)
    unet, text_encoder = checkpoint.unet, checkpoint.text_encoder
    if lora is not None:
        patched = b.add(
            "LoadLoRA",
            id="lora",
            unet=unet,
            text_encoder=text_encoder,
            path=lora,
            strength_unet=strength,
            strength_text_encoder=strength,
        )
        unet, text_encoder = patched.unet, patched.text_encoder
    pos = b.add("TextEncode", id="pos", text_encoder=text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=text_encoder, text="")
    add_sampling(b, unet, checkpoint.vae, pos.conditioning, neg.conditioning, cfg=cfg,
                 steps=steps, seed=seed, batch_size=batch_size, scheduler=scheduler,
                 shift=shift, rescale=rescale)  # fmt: skip
    return b.build()


def add_sampling(
    b: WorkflowBuilder,
    unet: Any,
    vae: Any,
    positive: Any,
    negative: Any,
    *,
    cfg: float,
    steps: int,
    seed: int,
    batch_size: int = 1,
    scheduler: str = "euler",
    shift: float = 0.0,
    rescale: float = 0.0,
) -> None:
    """The demo's sampling tail, shared by every measured graph so their settings cannot drift:
    Scheduler, CFG, a picture-sized EmptyLatent, Denoise and VAEDecode (id ``decode``).
    ``shift`` (rectified-flow models only) replaces the model's own timestep shift when not 0;
    ``rescale`` is the CFG node's guidance rescale (Lin et al.'s fix for a zero-terminal-SNR
    model's over-bright strong guidance), set only when not 0 so other graphs stay as they were."""
    shifted = {"shift": shift} if shift else {}
    rescaled = {"rescale": rescale} if rescale else {}
    sched = b.add("Scheduler", id="sched", unet=unet, name=scheduler, steps=steps, **shifted)
    guider = b.add(
        "CFG", id="cfg", unet=unet, positive=positive, negative=negative, scale=cfg, **rescaled
    )  # fmt: skip
    empty = b.add(
        "EmptyLatent", id="empty", width=IMAGE_SIZE, height=IMAGE_SIZE, batch_size=batch_size
    )
    den = b.add("Denoise", id="denoise", guider=guider.guider, scheduler=sched.scheduler,
                latent=empty.latent, seed=seed)  # fmt: skip
    b.add("VAEDecode", id="decode", vae=vae, latent=den.latent)


@dataclass(frozen=True)
class Sample:
    """One scored picture and the settings that made it."""

    scene: Scene
    caption: str
    seed: int
    """The Denoise seed of the caption's batch; ``batch_index`` tells the pictures apart."""
    batch_index: int
    cfg: float
    strength: float | None
    """The LoRA strength, or None for a run without a LoRA."""
    result: dict[str, Any] = field(repr=False)
    """``nodes.demo.evaluate.score``'s dict for this picture."""


@dataclass
class AdherenceRunner:
    """Renders captions through one nodeflow Executor and scores the pictures.

    ``model`` is what ``LoadCheckpoint``'s ``path`` gets: ``"demo"`` (the built-in model), a name
    under the models dir, or an absolute path to a diffusers folder. ``models_dir`` defaults to an
    empty temporary folder, so ``"demo"`` always means the built-in model and never a user's model
    of that name. ``lora`` is an absolute path (or a name under ``models_dir/loras``).
    """

    model: str
    lora: str | None = None
    steps: int = DEFAULT_STEPS
    scheduler: str = DEFAULT_SCHEDULER
    device: str = "cpu"
    models_dir: Path | None = None
    shift: float = 0.0
    """The Scheduler's ``shift`` for a rectified-flow model (0: the model's own)."""
    rescale: float = 0.0
    """The CFG node's guidance rescale (0: off)."""
    seconds: float = 0.0
    """Wall time spent in workflow runs so far."""
    pictures: int = 0
    _executor: Any = field(default=None, init=False, repr=False)
    _tmp: Any = field(default=None, init=False, repr=False)

    def executor(self) -> Any:
        """The one Executor (made on first use): its Runtime keeps the model loaded and its output
        cache keeps each caption's encoding, so neither is repeated per picture."""
        if self._executor is None:
            from nodeflow.context import Environment
            from nodeflow.executor import Executor
            from nodeflow.plugins import load_catalog
            from nodeflow.runtime import Runtime
            from nodes.loaders import quiet_hub_libraries

            quiet_hub_libraries()
            catalog = load_catalog()
            if catalog.failures:
                raise RuntimeError(f"node plugins failed to load: {catalog.failures}")
            self._tmp = tempfile.TemporaryDirectory(prefix="nodeflow-adherence-")
            root = Path(self._tmp.name)
            env = Environment.from_dirs(
                self.models_dir or root / "models", root / "output", root / "input"
            )
            self._executor = Executor(
                catalog, env=env, runtime=Runtime(self.device), previews=False
            )
        return self._executor

    def resolved_model(self) -> Path:
        """The folder or file ``LoadCheckpoint`` loads for ``model`` (for the report)."""
        from nodes.loaders import resolve_checkpoint

        return resolve_checkpoint(self.model, self.executor().env)

    def images(
        self,
        prompt: str,
        *,
        cfg: float = DEFAULT_CFG,
        seed: int = 0,
        batch_size: int = 1,
        strength: float = 1.0,
    ) -> np.ndarray:
        """``batch_size`` pictures of ``prompt`` as a float array [B, 64, 64, 3] in 0..1."""
        workflow = adherence_workflow(
            prompt,
            model=self.model,
            cfg=cfg,
            steps=self.steps,
            scheduler=self.scheduler,
            seed=seed,
            batch_size=batch_size,
            lora=self.lora,
            strength=strength,
            shift=self.shift,
            rescale=self.rescale,
        )
        started = time.perf_counter()
        result = self.executor().run(workflow, targets=["decode"])
        self.seconds += time.perf_counter() - started
        if not result.ok:
            detail = result.error.traceback if result.error else result.status
            raise RuntimeError(f"the adherence workflow failed:\n{detail}")
        pixels = result.values["decode"]["image"].pixels.float().cpu().numpy()
        self.pictures += pixels.shape[0]
        return pixels

    def run(
        self,
        scenes: Sequence[Scene],
        *,
        cfg: float = DEFAULT_CFG,
        seed: int = 0,
        per_caption: int = 1,
        strength: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Sample]:
        """Render and score ``per_caption`` pictures of each scene's caption.

        Scene ``i`` is drawn with Denoise seed ``seed + i`` as one batch of ``per_caption``
        (a batch amortises the per-step overhead of the tiny U-Net). ``strength`` must be given
        exactly when the runner has a LoRA.
        """
        if (strength is None) != (self.lora is None):
            raise ValueError("give a LoRA strength exactly when the runner has a LoRA")
        samples: list[Sample] = []
        for index, scene in enumerate(scenes):
            text = caption(scene)
            pictures = self.images(
                text,
                cfg=cfg,
                seed=seed + index,
                batch_size=per_caption,
                strength=1.0 if strength is None else strength,
            )
            for batch_index, picture in enumerate(pictures):
                samples.append(
                    Sample(
                        scene=scene,
                        caption=text,
                        seed=seed + index,
                        batch_index=batch_index,
                        cfg=cfg,
                        strength=strength,
                        result=score(picture, scene),
                    )
                )
            if progress is not None:
                progress(index + 1, len(scenes))
        return samples

    def close(self) -> None:
        """Drop the executor (and the loaded model with it) and its temporary folders."""
        self._executor = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def accuracy(samples: Iterable[Sample], check: str) -> float | None:
    """The share of pictures passing ``check``; None when no picture has the flag (e.g. no
    caption in the sample names a position)."""
    values = [s.result[check] for s in samples if s.result.get(check) is not None]
    return sum(bool(v) for v in values) / len(values) if values else None


def mean_outline(samples: Iterable[Sample]) -> float:
    """The mean ``outline_score``: ~0 for filled shapes, ~0.3-0.6 for the outlined style."""
    return statistics.fmean(s.result["outline_score"] for s in samples)


def summarize(samples: Sequence[Sample]) -> dict[str, float | int | None]:
    """Every check's accuracy, the mean outline score and the picture count, for one setting."""
    summary: dict[str, float | int | None] = {"pictures": len(samples)}
    summary |= {check: accuracy(samples, check) for check in CHECKS}
    summary["outline_score"] = mean_outline(samples) if samples else None
    return summary
