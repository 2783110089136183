"""SYN, after SynDigits (Ganin and Lempitsky 2015, Sec. 5.1): digits rendered in varied
fonts, sizes, positions and rotations, with varied stroke and background colours, then
blurred.

Ganin and Lempitsky rendered one- to three-digit numbers in Windows fonts; here each
image is one digit, in the TrueType fonts matplotlib ships, keeping only those whose
glyphs for the characters '0'-'9' are the digits (glyph names ``zero`` .. ``nine``):
cmex10 and cmsy10 put other symbols there (parentheses, brackets, infinity, ...),
cmmi10 old-style figures, the STIX size and non-Unicode fonts and the two Display
fonts have no glyph there, and LastResort only its placeholder. Stroke and background
colours are drawn uniformly in RGB, redrawn until their luma (Rec. 601) differs by at
least :data:`MIN_CONTRAST`, so every digit can be read.
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: The glyph names of '0'-'9' in a font whose digits are digits.
DIGIT_GLYPHS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 28
#: Rendered on a 4x larger canvas, then reduced to SIZE x SIZE by area averaging.
SCALE = 4
#: Font size in canvas pixels at which glyphs are rasterised.
FONT_PIXELS = 96
#: The digit's height, as a fraction of the image's (drawn uniformly).
HEIGHT = (0.5, 0.85)
#: Largest width, as a fraction of the image's.
MAX_WIDTH = 0.9
#: Rotation in degrees (drawn uniformly).
ROTATION = (-20.0, 20.0)
#: Gaussian blur's sigma in output pixels (drawn uniformly).
BLUR = (0.0, 1.0)
#: Least |luma(stroke) - luma(background)|, lumas in [0, 1].
MIN_CONTRAST = 0.3
LUMA = np.array([0.299, 0.587, 0.114])


def has_digit_glyphs(path: str) -> bool:
    """Whether the font maps '0'-'9' to glyphs named ``zero`` .. ``nine``."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(path)
    for character, name in zip("0123456789", DIGIT_GLYPHS):
        index = font.get_char_index(ord(character))
        if index == 0 or font.get_glyph_name(index) != name:
            return False
    return True


def matplotlib_fonts() -> list[str]:
    """Every TrueType font matplotlib ships, sorted by file name."""
    import matplotlib

    return sorted(glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "*.ttf")))


def legible_fonts() -> list[str]:
    """matplotlib's TrueType fonts whose glyphs for '0'-'9' are the digits."""
    return [path for path in matplotlib_fonts() if has_digit_glyphs(path)]


@functools.lru_cache(maxsize=None)
def glyph(path: str, digit: int) -> Image.Image:
    """The digit in the font, as an 8-bit coverage mask cropped to its ink."""
    font = ImageFont.truetype(path, FONT_PIXELS)
    mask = Image.new("L", (2 * FONT_PIXELS, 2 * FONT_PIXELS), 0)
    ImageDraw.Draw(mask).text((FONT_PIXELS, FONT_PIXELS), str(digit), fill=255, font=font, anchor="mm")
    return mask.crop(mask.getbbox())


def luma(rgb: np.ndarray) -> float:
    return float(rgb @ LUMA) / 255.0


def colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(stroke, background) RGB colours, uint8 values as floats, at least MIN_CONTRAST apart in luma."""
    while True:
        stroke, background = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
        if abs(luma(stroke) - luma(background)) >= MIN_CONTRAST:
            return stroke, background


def render_one(path: str, digit: int, rng: np.random.Generator) -> np.ndarray:
    """One SYN image, 28 x 28 x 3 uint8."""
    canvas = SIZE * SCALE
    mask = glyph(path, digit).rotate(rng.uniform(*ROTATION), resample=Image.BICUBIC, expand=True)
    mask = mask.crop(mask.getbbox())
    height = rng.uniform(*HEIGHT) * canvas
    scale = min(height / mask.height, MAX_WIDTH * canvas / mask.width)
    mask = mask.resize((max(1, round(mask.width * scale)), max(1, round(mask.height * scale))), Image.BICUBIC)
    left = rng.integers(canvas - mask.width + 1)
    top = rng.integers(canvas - mask.height + 1)
    coverage = np.zeros((canvas, canvas, 1))
    coverage[top:top + mask.height, left:left + mask.width, 0] = np.asarray(mask) / 255.0
    stroke, background = colours(rng)
    image = Image.fromarray((background + coverage * (stroke - background)).round().astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR) * SCALE))
    return np.asarray(image.resize((SIZE, SIZE), Image.BOX))


def render(labels: np.ndarray, fonts: list[str], rng: np.random.Generator) -> np.ndarray:
    """N SYN images (N x 28 x 28 x 3 uint8) of the digits ``labels``, each in a font drawn uniformly."""
    if not fonts:
        raise ValueError("no font with digit glyphs to render SYN with")
    choice = rng.integers(len(fonts), size=len(labels))
    return np.stack([render_one(fonts[f], int(digit), rng) for f, digit in zip(choice, labels)])
