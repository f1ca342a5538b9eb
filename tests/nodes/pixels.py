"""Comparing pictures that two computations made of the same model.

Two loads of the same weights (a diffusers folder and the single file made from it, a ``.ckpt``
and a folder, a whole model folder and its component folders) hold bit-identical tensors at
different addresses. BLAS picks its kernel by alignment as well as by shape, so a one-row matmul
over an unaligned weight (seen: OpenCLIP's text projection, mmapped at an offset of 12 bytes mod
64) sums in another order than over an aligned copy and differs in the last bit; CFG and the
sampler then amplify that to about 1e-6 on the image. Which processor CI lands on decides the
kernels, so bit-equality between two loads is a coin toss. ``SAME_MODEL_TOLERANCE`` is the bound
the diffusers parity suites hold nodeflow to (DESIGN.md: 1e-4 on the float image before
quantisation), about 70x the drift measured here (1.4e-6 for tiny-sdxl), and about 100x below
what a real loading mistake does (a wrong pad token, a dropped layer, a misread head count: 1e-2
and more). Equality proper stays where one computation runs twice on the same tensors (a LoRA
removed, a model offloaded and brought back).
"""

from __future__ import annotations

import numpy as np

SAME_MODEL_TOLERANCE = 1e-4


def assert_same_pixels(actual: np.ndarray, expected: np.ndarray) -> None:
    """Pixels of two loads of the same weights agree to float order, and are not both empty."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = float(np.abs(actual - expected).max())
    assert diff <= SAME_MODEL_TOLERANCE, f"max |difference| {diff:.3g} > {SAME_MODEL_TOLERANCE}"
