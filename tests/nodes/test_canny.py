"""The Canny node is OpenCV's detector on the picture's 8-bit values, as a 3-channel image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.canny import canny
from nodes.types import Image


def _scene() -> np.ndarray:
    """Two pictures: a disc and a tilted square with soft noise, 8-bit RGB."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    disc = (np.hypot(yy - 24, xx - 30) < 14)[..., None] * np.array([220, 40, 30])
    square = (np.abs((xx - 32) + (yy - 24)) < 16) & (np.abs((xx - 32) - (yy - 24)) < 16)
    square = square[..., None] * np.array([30, 200, 90])
    pictures = np.stack([disc, square]) + rng.integers(0, 12, (2, 48, 64, 3))
    return pictures.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("low, high, l2", [(100, 200, False), (30, 60, True)])
def test_canny_is_opencv_canny_on_the_8_bit_picture(low, high, l2):
    import cv2

    scene = _scene()
    image = Image(torch.from_numpy(scene.astype(np.float32) / 255.0))
    result = canny(image, low_threshold=low, high_threshold=high, l2_gradient=l2).pixels
    assert result.shape == (2, 48, 64, 3)
    for index, picture in enumerate(scene):
        expected = cv2.Canny(picture, low, high, L2gradient=l2).astype(np.float32) / 255.0
        assert expected.any(), "the scene has edges"
        for channel in range(3):
            assert np.array_equal(result[index, ..., channel].numpy(), expected)


def test_thresholds_in_the_wrong_order_are_refused():
    image = Image(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="low_threshold"):
        canny(image, low_threshold=200, high_threshold=100)
