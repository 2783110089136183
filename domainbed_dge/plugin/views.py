"""Synthetic domains for single-domain generalization: K augmented views of a batch.

How a view draws its augmentation (``dge_view_sampling``, DESIGN 1b):

* ``batch`` (the paper's reading): one draw per view, applied to the whole batch on
  the batch's device (torchvision v2 transforms work on batched tensors), anew every
  iteration;
* ``image``: every image of every view its own draw;
* ``fixed``: view k replays the same draw every iteration, K concrete augmentations
  seeded once per run, so view k is one synthetic domain throughout.

With ``dge_augment: none`` every view is the batch itself. Images are brought to
[0, 1] RGB-like tensors for the transform and back:

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

from domainbed_dge.plugin.hparams import NORMALIZATIONS, VIEW_SAMPLINGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Paper, Table 9: rotation in [-30, 30] degrees, brightness factor in [0.7, 1.3].
ROTATION_DEGREES = (-30.0, 30.0)
BRIGHTNESS_FACTORS = (0.7, 1.3)


def make_transform(augment: str, random_ops: int, magnitude: int) -> v2.Transform | None:
    """The torchvision v2 transform behind one of ``hparams.AUGMENTATIONS`` (``None``
    for ``none``: views are the batch itself)."""
    if augment == "none":
        return None
    rotation = v2.RandomRotation(ROTATION_DEGREES)
    brightness = v2.ColorJitter(brightness=BRIGHTNESS_FACTORS)
    transforms = {
        "randaugment": lambda: v2.RandAugment(num_ops=random_ops, magnitude=magnitude),
        "rotation": lambda: rotation,
        "brightness": lambda: brightness,
        "rotation_brightness": lambda: v2.Compose([rotation, brightness]),
    }
    if augment not in transforms:
        raise ValueError(f"unknown augmentation {augment!r}; allowed: {', '.join([*transforms, 'none'])}")
    return transforms[augment]()


def fixed_view_seeds(run_seed: int, count: int) -> list[int]:
    """``count`` seeds for ``fixed`` views, derived from ``run_seed`` by a private
    generator (the global random state is neither read nor advanced)."""
    generator = torch.Generator().manual_seed(run_seed)
    return torch.randint(0, 2**62, (count,), generator=generator, device="cpu").tolist()


def keep_fixed_view_seeds(module: torch.nn.Module) -> None:
    """``fixed`` views of ``module.view_maker``: the seeds become the buffer
    ``fixed_view_seeds``, so that checkpoints carry them and a resumed run replays the
    same K views; the view maker keeps a host copy, reloaded with the state."""
    module.register_buffer("fixed_view_seeds", torch.tensor(module.view_maker.seeds, dtype=torch.int64))

    def reload_seeds(module, incompatible_keys):
        module.view_maker.seeds = module.fixed_view_seeds.tolist()

    module.register_load_state_dict_post_hook(reload_seeds)


def view_maker_for(hparams: dict, channels: int, run_seed: int) -> "ViewMaker":
    """The view maker the ``dge_*`` view hyperparameters describe; ``fixed`` views are
    seeded from ``run_seed`` (train.py's ``--seed``, see :func:`fixed_view_seeds`)."""
    transform = make_transform(hparams["dge_augment"], hparams["dge_random_ops"], hparams["dge_magnitude"])
    sampling = hparams["dge_view_sampling"]
    seeds = fixed_view_seeds(run_seed, hparams["dge_num_views"]) if sampling == "fixed" else None
    return ViewMaker(transform, hparams["dge_input_normalization"], channels, sampling, seeds)


class ViewMaker:
    """Makes views of image batches laid out as ``(B, C, H, W)``.

    ``transform`` ``None`` makes every view the batch itself. With ``sampling="fixed"``
    view k replays the draw seeded by ``seeds[k]`` (see :func:`fixed_view_seeds`).
    """

    def __init__(
        self,
        transform: v2.Transform | None,
        normalization: str,
        channels: int,
        sampling: str = "batch",
        seeds: list[int] | None = None,
    ):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown input normalization {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}")
        if normalization == "imagenet" and channels != 3:
            raise ValueError(f"ImageNet normalisation needs 3 channels, the input has {channels}")
        if sampling not in VIEW_SAMPLINGS:
            raise ValueError(f"unknown view sampling {sampling!r}; allowed: {', '.join(VIEW_SAMPLINGS)}")
        if sampling == "fixed" and transform is not None and not seeds:
            raise ValueError("fixed views need their seeds (one per view)")
        self.transform = transform
        self.normalization = normalization
        self.channels = channels
        self.sampling = sampling
        self.seeds = list(seeds or [])
        self._statistics_on: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One view of ``x`` with a fresh draw: one for the whole batch, or one per
        image under ``sampling="image"``."""
        if self.transform is None:
            return x
        unit = self._to_unit(x)
        if self.sampling == "image":
            return self._from_unit(torch.cat([self.transform(image) for image in unit.split(1)]))
        return self._from_unit(self.transform(unit))

    def views(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        """``count`` views of ``x``; under ``fixed`` sampling, view k replays its own draw."""
        if self.transform is None or self.sampling != "fixed":
            return [self(x) for _ in range(count)]
        if count > len(self.seeds):
            raise ValueError(f"{count} fixed views asked for, but only {len(self.seeds)} seeds were drawn")
        return [self._replayed(x, seed) for seed in self.seeds[:count]]

    def _replayed(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        # torchvision draws a transform's parameters from the CPU generator: seeding it
        # inside fork_rng replays the same draw and leaves the run's random stream as it was.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._from_unit(self.transform(self._to_unit(x)))

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
