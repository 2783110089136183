"""Synthetic domains for single-domain generalization: K augmented views of a batch.

Each view draws its augmentation once and applies it to the whole batch, on the
batch's device (torchvision v2 transforms work on batched tensors). Images are
brought to [0, 1] RGB-like tensors for the transform and back:

* ImageNet-normalised RGB is un-normalised, clamped, augmented and re-normalised.
* Grey [0, 1] images (MNIST) are augmented as they are; colour operations leave a
  single channel unchanged, as torchvision defines them.
* Two-channel images (ColoredMNIST) are augmented as the red and green channels of an
  RGB image whose blue channel is zero; colour operations therefore act on that RGB
  image (saturation mixes red and green towards their grey level), and the blue
  channel is dropped afterwards.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Paper, Table 9: rotation in [-30, 30] degrees, brightness factor in [0.7, 1.3].
ROTATION_DEGREES = (-30.0, 30.0)
BRIGHTNESS_FACTORS = (0.7, 1.3)


def make_transform(augment: str, random_ops: int, magnitude: int) -> v2.Transform:
    """The torchvision v2 transform behind one of ``hparams.AUGMENTATIONS``."""
    rotation = v2.RandomRotation(ROTATION_DEGREES)
    brightness = v2.ColorJitter(brightness=BRIGHTNESS_FACTORS)
    transforms = {
        "randaugment": lambda: v2.RandAugment(num_ops=random_ops, magnitude=magnitude),
        "rotation": lambda: rotation,
        "brightness": lambda: brightness,
        "rotation_brightness": lambda: v2.Compose([rotation, brightness]),
    }
    if augment not in transforms:
        raise ValueError(f"unknown augmentation {augment!r}; allowed: {', '.join(transforms)}")
    return transforms[augment]()


class ViewMaker:
    """Makes augmented views of image batches laid out as ``(B, C, H, W)``."""

    def __init__(self, transform: v2.Transform, normalization: str, channels: int):
        if normalization not in ("imagenet", "none"):
            raise ValueError(f"unknown input normalization {normalization!r}; allowed: imagenet, none")
        if normalization == "imagenet" and channels != 3:
            raise ValueError(f"ImageNet normalisation needs 3 channels, the input has {channels}")
        self.transform = transform
        self.normalization = normalization
        self.channels = channels
        self._statistics_on: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One view of ``x``: one augmentation drawn for the whole batch."""
        return self._from_unit(self.transform(self._to_unit(x)))

    def views(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        return [self(x) for _ in range(count)]

    def _statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet's mean and std on ``x``'s device, copied there once."""
        key = (x.device, x.dtype)
        if key not in self._statistics_on:
            self._statistics_on[key] = tuple(
                torch.tensor(values, dtype=x.dtype).view(1, 3, 1, 1).to(x.device) for values in (IMAGENET_MEAN, IMAGENET_STD)
            )
        return self._statistics_on[key]

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalization == "imagenet":
            mean, std = self._statistics(x)
            x = x * std + mean
        x = x.clamp(0.0, 1.0)
        if self.channels == 2:
            x = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
        return x

    def _from_unit(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 2:
            x = x[:, :2]
        if self.normalization == "imagenet":
            mean, std = self._statistics(x)
            x = (x - mean) / std
        return x.contiguous()
