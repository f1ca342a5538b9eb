"""diffusers and transformers, imported only as far as a run uses them.

Some packages of these libraries import every module they hold when any one of them is imported:
``diffusers.models.unets`` and ``diffusers.models.transformers`` import all of diffusers' U-Nets
and transformer models (AceStep's pulls in ``diffusers.hooks``, whose ``__init__`` imports every
hook; AuraFlow's pulls in the single-file loading utilities), ``diffusers.models.autoencoders``
every autoencoder, and the schedulers import ``scipy.stats`` for an option (beta sigmas) that
runs nothing unless chosen. Of the 2.3 s that importing the U-Net, VAE, scheduler and CLIP
classes took on a 2-core machine, 0.35 s went to such modules (see BENCHMARKS.md, "Cold start");
the rest is what the classes themselves import.

``prepare()`` (which ``diffusers()`` and ``transformers()`` call) puts those packages in
``sys.modules`` unexecuted: their submodules import as usual, and a package's own ``__init__``
runs the first time anything reads an attribute the package does not have yet (``from
diffusers.models.unets import UNet1DModel`` works as before, it just runs the ``__init__`` then).
This changes when that code runs, not what it does; packages already imported are left as they
are. ``NODEFLOW_EAGER_IMPORTS=1`` turns it off.

What stays: ``torch._dynamo`` (diffusers' and transformers' utilities import it), transformers'
own machinery, ``scipy.optimize`` (transformers' object-detection loss imports a function from
it), and ``peft`` where it is installed: diffusers' U-Net inherits its LoRA mixins, which import
peft's base layer class when peft is there. nodeflow's LoRA path does not use peft.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any

DEFERRED = (
    "diffusers.models.unets",
    "diffusers.models.transformers",
    "diffusers.models.autoencoders",
    "diffusers.hooks",
    "scipy.stats",
)
"""Modules whose code runs on first use of one of their attributes instead of on import; each
only imports and re-exports (or, for ``scipy.stats``, is imported for an option a run may not
use)."""

EAGER_ENV = "NODEFLOW_EAGER_IMPORTS"
PENDING = "__nodeflow_deferred__"
"""Set (True) in a deferred module's namespace until its code has run."""

_lock = threading.Lock()
_prepared = False


def prepare() -> None:
    """Defer the ``DEFERRED`` modules that are not imported yet (once per process)."""
    global _prepared
    if _prepared:
        return
    with _lock:
        if _prepared:
            return
        if os.environ.get(EAGER_ENV, "") not in ("1", "true", "yes"):
            for name in DEFERRED:
                defer(name)
        _prepared = True


def imported(name: str) -> bool:
    """Whether module ``name`` has been imported and its code has run (not merely deferred)."""
    module = sys.modules.get(name)
    return module is not None and not vars(module).get(PENDING, False)


def diffusers() -> Any:
    """The ``diffusers`` module, with ``prepare()`` done first."""
    prepare()
    import diffusers

    return diffusers


def transformers() -> Any:
    """The ``transformers`` module, with ``prepare()`` done first."""
    prepare()
    import transformers

    return transformers


def defer(name: str) -> ModuleType | None:
    """Put module ``name`` in ``sys.modules`` without running its code; run it when an attribute
    it lacks is first read. Returns the module, or None where it is already imported or cannot
    be found."""
    if name in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(name)  # imports the parent packages
    except (ImportError, ValueError):
        return None
    if spec is None or spec.loader is None or name in sys.modules:
        return None
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    run_lock = threading.RLock()

    def __getattr__(attribute: str) -> Any:  # PEP 562: only for attributes not yet there
        with run_lock:
            if module.__dict__.get("__getattr__") is __getattr__:
                del module.__dict__["__getattr__"], module.__dict__[PENDING]
                try:
                    loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)  # as a failed import does
                    raise
        return getattr(module, attribute)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    setattr(module, PENDING, True)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
