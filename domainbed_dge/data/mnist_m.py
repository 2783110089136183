"""MNIST-M (Ganin and Lempitsky 2015, Sec. 5.1): each MNIST digit blended with a random
crop of a colour photograph, channel by channel, ``out = |crop - digit|``.

The digit is MNIST's grey image as it is (0 background, 255 stroke), the same in the
three channels: the background keeps the photograph and the stroke inverts it. (A
widely used script binarises the digit first; the paper's formula does not.)
"""

from __future__ import annotations

import numpy as np


def blend(digits: np.ndarray, photographs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """N x 28 x 28 uint8 digits -> N x 28 x 28 x 3 uint8 MNIST-M images: for each, a
    photograph drawn uniformly and a crop at a uniform position within it."""
    count, height, width = digits.shape
    choice = rng.integers(len(photographs), size=count)
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        photograph = photographs[choice[index]]
        top = rng.integers(photograph.shape[0] - height + 1)
        left = rng.integers(photograph.shape[1] - width + 1)
        crop = photograph[top:top + height, left:left + width].astype(np.int16)
        out[index] = np.abs(crop - digits[index, :, :, None].astype(np.int16)).astype(np.uint8)
    return out
