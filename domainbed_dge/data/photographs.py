"""The colour photographs MNIST-M's backgrounds are cropped from, all shipped inside
installed packages (Ganin and Lempitsky 2015 used BSDS500's, which must be downloaded).

scikit-learn's two sample images, matplotlib's portrait of Grace Hopper, and the colour
photographs bundled in scikit-image's wheel (its other images are grey, textures, or
microscopy).
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load():
        import matplotlib
        from PIL import Image

        with Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", name)) as image:
            return np.asarray(image.convert("RGB"))

    return load


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        from skimage import data

        return getattr(data, name)()

    return load


#: (package, photograph, loader): each loader returns an H x W x 3 uint8 array from the
#: package's own files.
PHOTOGRAPHS = (
    ("scikit-learn", "china.jpg", _sklearn("china.jpg")),
    ("scikit-learn", "flower.jpg", _sklearn("flower.jpg")),
    ("matplotlib", "grace_hopper.jpg", _matplotlib("grace_hopper.jpg")),
    ("scikit-image", "astronaut", _skimage("astronaut")),
    ("scikit-image", "chelsea", _skimage("chelsea")),
    ("scikit-image", "coffee", _skimage("coffee")),
    ("scikit-image", "rocket", _skimage("rocket")),
)


def load_photographs() -> list[np.ndarray]:
    """Every photograph of :data:`PHOTOGRAPHS`, as H x W x 3 uint8 arrays, in that order."""
    photographs = []
    for package, name, load in PHOTOGRAPHS:
        try:
            photograph = np.ascontiguousarray(load(), dtype=np.uint8)
        except ImportError as error:
            raise SystemExit(f"{package} is needed for MNIST-M's photograph {name}: "
                             "pip install 'domainbed-dge[data]'") from error
        if photograph.ndim != 3 or photograph.shape[2] != 3:
            raise ValueError(f"{package}'s {name} is not an RGB photograph: shape {photograph.shape}")
        photographs.append(photograph)
    return photographs
