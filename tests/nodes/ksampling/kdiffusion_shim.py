"""k-diffusion's samplers as the executable oracle, loaded without the rest of k-diffusion.

Why a shim: the ``k-diffusion`` package cannot be installed sanely beside this project's pins.
0.1.1.post1 needs ``dctorch``, which needs numpy < 2 (pinned: 2.4.6); pip then falls back to
0.0.16, whose dependencies (36 packages: wandb, OpenTelemetry, clip-anytorch, kornia,
scikit-image, clean-fid, and torchvision 0.28.0 from PyPI) include a torchvision built for CUDA
torch that fails to import with the CPU torch pin, and once installed it makes transformers'
``CLIPImageProcessor`` unimportable. The samplers themselves need only torch, scipy, tqdm,
torchsde and torchdiffeq. So CI installs ``k-diffusion==0.1.1.post1`` with ``--no-deps``
(``.ci/run``), and this module executes its ``k_diffusion/sampling.py`` and ``external.py``
(identical in 0.0.16 and 0.1.1.post1) as submodules of a stand-in ``k_diffusion`` package whose
``utils`` has the one helper they use, ``append_dims``; the package's ``__init__`` (which
imports its training code and torchvision) never runs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "_kdiffusion_oracle"


def _append_dims(x: Any, target_dims: int) -> Any:
    """k-diffusion's helper: trailing singleton dimensions up to ``target_dims``."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
    return x[(...,) + (None,) * missing]


def _source_dir() -> Path:
    try:
        distribution = metadata.distribution("k-diffusion")
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            "the k-diffusion oracle is not installed: "
            "pip install --no-deps -c constraints.txt k-diffusion==0.1.1.post1"
        ) from None
    found = distribution.locate_file("k_diffusion/sampling.py")
    return Path(str(found)).parent


def load() -> types.SimpleNamespace:
    """``sampling`` and ``external`` of the installed k-diffusion."""
    if PACKAGE in sys.modules:
        package = sys.modules[PACKAGE]
        return types.SimpleNamespace(sampling=package.sampling, external=package.external)
    source = _source_dir()
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(source)]
    utils = types.ModuleType(f"{PACKAGE}.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules[PACKAGE], sys.modules[f"{PACKAGE}.utils"] = package, utils
    for name in ("sampling", "external"):
        spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", source / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)
    return types.SimpleNamespace(sampling=package.sampling, external=package.external)
