"""The hyperparameters methods share: how views are made, and the comparison's optimiser.

DomainBed-free. An :class:`HParam` has a default (per dataset), a random-search draw
from its own seeded ``numpy.random.RandomState`` (as DomainBed's registry gives each
name), a description of the allowed values and a check. Each method's own
hyperparameters sit in its entry of ``plugin.methods``; the table of all of them,
and validation, are there too. All values are plain Python types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: Hyperparameters that label a run for the tables (a preset's variant name and
#: targets); every algorithm accepts and ignores them, train.py records them.
LABELS = ("sweep_variant", "sweep_targets")
#: ``none``: the views are the batch itself (the Baseline's vanilla training).
AUGMENTATIONS = ("randaugment", "rotation", "brightness", "rotation_brightness", "none")
#: DESIGN 1b: one draw per view batch (the paper), per image, or K draws fixed for the run.
VIEW_SAMPLINGS = ("batch", "image", "fixed")
NORMALIZATIONS = ("imagenet", "none")
OPTIMIZERS = ("adam", "sgd")
#: The 28 x 28 datasets (DomainBed's and the plugin's OfflineDigits), whose pixels are in
#: [0, 1] rather than ImageNet-normalised.
SMALL_IMAGES = ("Debug28", "RotatedMNIST", "ColoredMNIST", "OfflineDigits")
#: torchvision's RandAugment has 31 magnitude bins by default.
MAX_MAGNITUDE = 30


class HParamError(ValueError):
    """A hyperparameter has a value the plugin cannot use."""


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its default (per dataset), its random draw (``None``: the
    default) and its check."""

    name: str
    default: Callable[[str], Any]
    draw: Callable[[np.random.RandomState], Any] | None
    allowed: str
    check: Callable[[Any], bool]


def is_int(value: Any, minimum: int | None = None) -> bool:
    """An ``int`` (not a ``bool``), at least ``minimum`` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_number(value: Any) -> bool:
    """A finite ``int`` or ``float`` (not a ``bool``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def fixed(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


def choice(name: str, choices: tuple[str, ...], what: str) -> HParam:
    """A string choice whose default (and draw) is the first of ``choices``."""
    return HParam(name, fixed(choices[0]), None, f"one of {', '.join(choices)} ({what})", one_of(choices))


def num_views(min_domains: int) -> HParam:
    """``dge_num_views`` for a method that needs at least ``min_domains`` domains."""
    why = "the method compares domains" if min_domains > 1 else "1 is the paper's Baseline"
    return HParam("dge_num_views", fixed(3), lambda r: int(r.choice([2, 3, 4])),
                  f"an integer >= {min_domains} (views per batch in SDG; {why})", lambda v: is_int(v, min_domains))


#: How views are made: every method that trains on views has these (and ``num_views``).
VIEW_HPARAMS = (
    HParam("dge_augment", fixed("randaugment"), None, f"one of {', '.join(AUGMENTATIONS)}", one_of(AUGMENTATIONS)),
    choice("dge_view_sampling", VIEW_SAMPLINGS,
           "one draw per view batch, per image, or K draws fixed for the run"),
    HParam("dge_random_ops", fixed(2), lambda r: int(r.randint(1, 8)),
           "an integer >= 1 (RandAugment's num_ops)", lambda v: is_int(v, 1)),
    HParam("dge_magnitude", fixed(9), lambda r: int(r.randint(5, 15)),
           f"an integer in [0, {MAX_MAGNITUDE}] (RandAugment's magnitude)",
           lambda v: is_int(v, 0) and v <= MAX_MAGNITUDE),
    HParam("dge_input_normalization", lambda dataset: "none" if dataset in SMALL_IMAGES else "imagenet",
           None, f"one of {', '.join(NORMALIZATIONS)}", one_of(NORMALIZATIONS)),
)

#: The comparison's optimiser: every method of the plugin has these.
OPTIMIZER_HPARAMS = (
    HParam("dge_optimizer", fixed("adam"), None, f"one of {', '.join(OPTIMIZERS)}", one_of(OPTIMIZERS)),
    HParam("dge_momentum", fixed(0.9), None, "a number in [0, 1) (SGD momentum)",
           lambda v: is_number(v) and 0 <= v < 1),
)

#: How the gradient engine runs its K per-domain passes (``core.cuda_graphs``): the same
#: kernels either way, so the same numbers. Off by default until the CUDA tests have
#: passed on a device (reports/performance.md).
EXECUTION_HPARAMS = (
    HParam("dge_cuda_graphs", fixed(False), None,
           "true or false (on CUDA, replay the K per-domain passes from one captured CUDA graph; "
           "no effect on the CPU)", lambda v: isinstance(v, bool)),
)

#: Views, optimiser and execution: every method of the gradient engine has these (and ``num_views``).
ENGINE_HPARAMS = VIEW_HPARAMS + OPTIMIZER_HPARAMS + EXECUTION_HPARAMS

#: ``dge_num_views`` of DomainBed's own algorithms: off unless asked for, and never drawn
#: by a random search, so that their runs stay DomainBed's. One view would be one domain:
#: the algorithm's cross-domain terms would vanish as they do on the source batch alone.
HOST_NUM_VIEWS = HParam(
    "dge_num_views", fixed(0), None,
    "0 (off: DomainBed's algorithm as it is) or an integer >= 2 (that many augmented views of the source "
    "batch as its domains, SDG only; 1 is refused: one view is one domain, where the algorithm's "
    "cross-domain terms vanish as on the source batch alone)",
    lambda v: is_int(v, 0) and v != 1,
)

#: What the plugin adds to every DomainBed algorithm: views as its domains, and the
#: comparison's optimiser (``plugin.host_algorithms``).
HOST_HPARAMS = (HOST_NUM_VIEWS, *VIEW_HPARAMS, *OPTIMIZER_HPARAMS)
