"""OptDigits, the USPS stand-in: scikit-learn's ``load_digits()``, the UCI optdigits test
set of 1,797 handwritten digits by 43 writers, 8 x 8 with 17 grey levels (0-16).

USPS cannot be built from shipped data. Its 16 x 16 digits are normalised to fill the
frame, and the Digits benchmark resizes the whole frame (to 32 x 32; here 28 x 28).
optdigits' 8 x 8 images are 4 x 4 block counts of 32 x 32 bitmaps normalised the same
way, so each is upsampled whole, bilinearly, to 28 x 28: the digit fills the frame and
is centred, as USPS is in Digits.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 28
LEVELS = 16


def load_opt_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 28, 28, 3) uint8 images, white digits on black as MNIST, and (1797,) uint8 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise SystemExit("scikit-learn is needed for OptDigits: pip install 'domainbed-dge[data]'") from error
    digits = load_digits()
    images = np.stack([upsample(image) for image in digits.images])
    return np.repeat(images[..., None], 3, axis=3), digits.target.astype(np.uint8)


def upsample(image: np.ndarray) -> np.ndarray:
    """One 8 x 8 image of grey levels 0-16 -> 28 x 28 uint8 (0-255), bilinear."""
    grey = Image.fromarray((image * (255.0 / LEVELS)).astype(np.float32), mode="F")
    return np.clip(np.asarray(grey.resize((SIZE, SIZE), Image.BILINEAR)), 0, 255).round().astype(np.uint8)
