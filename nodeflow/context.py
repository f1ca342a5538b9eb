"""What a running node may ask of the engine, and nothing more.

A node gets a ``Context`` when its function declares a ``ctx: Context`` parameter. It reports
progress and previews through it (each report is also an interrupt point), and reaches the device,
the model manager and the run's folders without importing the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.loaders import LoaderRegistry


class Interrupted(Exception):
    """Raised inside a run when an interrupt was requested; the executor turns it into
    ``run.cancelled``. Nodes should let it propagate."""


@dataclass(frozen=True)
class Environment:
    """The folders a run reads and writes; relative node paths resolve against these."""

    models_dir: Path = Path("models")
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    allow_pickle: bool = False
    """Whether loaders may read pickle-based weight files (``.ckpt``). Pickles can run code, so
    this is the user's decision (``--allow-pickle``), never a workflow's."""
    extra_model_dirs: tuple[tuple[str, tuple[Path, ...]], ...] = ()
    """More folders per model kind, searched after ``models_dir / kind`` (from ComfyUI's
    ``extra_model_paths.yaml``: an existing ComfyUI or A1111 install's models where they are)."""

    def model_dirs(self, kind: str) -> list[Path]:
        """The folders models of ``kind`` (``checkpoints``, ``loras``, ...) are looked up in."""
        extra = [folder for name, folders in self.extra_model_dirs if name == kind
                 for folder in folders]  # fmt: skip
        return [self.models_dir / kind, *extra]

    @classmethod
    def from_dirs(
        cls,
        models_dir: str | Path | None = None,
        output_dir: str | Path | None = None,
        input_dir: str | Path | None = None,
        *,
        allow_pickle: bool = False,
        extra_model_dirs: dict[str, list[Path]] | None = None,
    ) -> Environment:
        default = cls()
        extra = tuple(
            (kind, tuple(Path(f).resolve() for f in folders))
            for kind, folders in (extra_model_dirs or {}).items()
        )
        return cls(
            models_dir=Path(models_dir or default.models_dir).resolve(),
            output_dir=Path(output_dir or default.output_dir).resolve(),
            input_dir=Path(input_dir or default.input_dir).resolve(),
            allow_pickle=allow_pickle,
            extra_model_dirs=extra,
        )


@dataclass
class Context:
    node_id: str
    node_type: str
    run_id: str
    env: Environment
    runtime: Any = None
    """The executor's ``nodeflow.runtime.Runtime``: device, dtype policy and model manager."""
    workflow: dict[str, Any] | None = None
    """The workflow document being run, as JSON (SaveImage embeds it in the PNG)."""
    _emit_progress: Callable[..., None] = field(default=lambda v, m, x=None: None, repr=False)
    _emit_preview: Callable[[Any, int], None] = field(default=lambda i, s: None, repr=False)
    _interrupted: Callable[[], bool] = field(default=lambda: False, repr=False)
    wants_previews: bool = True
    """Whether anyone shows previews; a node skips making them when not (they cost per step)."""
    loaders: LoaderRegistry = field(default_factory=LoaderRegistry)
    """The loaders plugins provide (``nodeflow_loaders``): ``ctx.loaders.for_path(path)`` finds
    the reader of a file format, ``ctx.loaders.get(kind)`` the loader of a model kind."""

    @property
    def device(self) -> Any:
        """The torch device this run computes on."""
        return self.runtime.device

    @property
    def models(self) -> Any:
        """The model manager: loaded models are shared across nodes and runs."""
        return self.runtime.models

    def check_interrupted(self) -> None:
        """Raise ``Interrupted`` if the run was asked to stop."""
        if self._interrupted():
            raise Interrupted(self.node_id)

    def progress(self, value: float, max: float, metrics: dict[str, float] | None = None) -> None:
        """Report progress (and give the run a chance to stop here); ``metrics`` are figures
        that ride along on the event (a training node's loss)."""
        self.check_interrupted()
        if metrics is None:
            self._emit_progress(value, max)
        else:
            self._emit_progress(value, max, metrics)

    def preview(self, image: Any, step: int = 0) -> None:
        """Publish a cheap picture of work in progress (a PIL image)."""
        if self.wants_previews:
            self._emit_preview(image, step)
