"""The plugin's hyperparameters: defaults, random-search ranges and allowed values.

DomainBed-free: :func:`define` takes a function giving each name its own seeded
``numpy.random.RandomState``, as DomainBed's registry does, so adding names here
changes no one else's draws. All values are plain Python types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ALGORITHMS = ("DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad")
#: Methods that compare domains: they need K >= 2 gradients. GradAvg with K = 1 is the
#: paper's Baseline (one view per batch).
NEEDS_TWO_DOMAINS = ("DGE", "AgrSum", "AgrRand", "PCGrad")
#: ``none``: the views are the batch itself (the Baseline's vanilla training).
AUGMENTATIONS = ("randaugment", "rotation", "brightness", "rotation_brightness", "none")
#: DESIGN 1b: how each view draws its augmentation.
VIEW_SAMPLINGS = ("batch", "image", "fixed")
#: DESIGN 1b: weights kept across iterations (Alg. 1 as written) or reset to 1 each one.
WEIGHT_MODES = ("persistent", "reset")
#: DESIGN 1b: Eq. 5-6 project S_i against the already adjusted S_j, or the original one.
ADJUST_AGAINST = ("adjusted", "original")
NORMALIZATIONS = ("imagenet", "none")
OPTIMIZERS = ("adam", "sgd")
UPDATES = ("sequential", "mean")
PCGRAD_ORDERS = ("random", "fixed")
REDUCTIONS = ("sum", "mean")
#: DomainBed's 28 x 28 datasets, whose pixels are in [0, 1] rather than ImageNet-normalised.
SMALL_IMAGES = ("Debug28", "RotatedMNIST", "ColoredMNIST")
#: torchvision's RandAugment has 31 magnitude bins by default.
MAX_MAGNITUDE = 30


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its default (per dataset), its random draw and its check."""

    name: str
    algorithms: tuple[str, ...]
    default: Callable[[str], Any]
    draw: Callable[[np.random.RandomState], Any]
    allowed: str
    check: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def _fixed(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


HPARAMS = (
    # Views and optimiser: shared by every algorithm of the engine.
    HParam("dge_num_views", NEEDS_TWO_DOMAINS, _fixed(3), lambda r: int(r.choice([2, 3, 4])),
           "an integer >= 2 (views per batch in SDG; the method compares domains)", lambda v: _is_int(v) and v >= 2),
    HParam("dge_num_views", ("GradAvg",), _fixed(3), lambda r: int(r.choice([2, 3, 4])),
           "an integer >= 1 (views per batch in SDG; 1 is the paper's Baseline)", lambda v: _is_int(v) and v >= 1),
    HParam("dge_augment", ALGORITHMS, _fixed("randaugment"), _fixed("randaugment"),
           f"one of {', '.join(AUGMENTATIONS)}", _one_of(AUGMENTATIONS)),
    HParam("dge_view_sampling", ALGORITHMS, _fixed("batch"), _fixed("batch"),
           f"one of {', '.join(VIEW_SAMPLINGS)} (one draw per view batch, per image, or K draws fixed for the run)",
           _one_of(VIEW_SAMPLINGS)),
    HParam("dge_random_ops", ALGORITHMS, _fixed(2), lambda r: int(r.randint(1, 8)),
           "an integer >= 1 (RandAugment's num_ops)", lambda v: _is_int(v) and v >= 1),
    HParam("dge_magnitude", ALGORITHMS, _fixed(9), lambda r: int(r.randint(5, 15)),
           f"an integer in [0, {MAX_MAGNITUDE}] (RandAugment's magnitude)",
           lambda v: _is_int(v) and 0 <= v <= MAX_MAGNITUDE),
    HParam("dge_input_normalization", ALGORITHMS,
           lambda dataset: "none" if dataset in SMALL_IMAGES else "imagenet",
           None, f"one of {', '.join(NORMALIZATIONS)}", _one_of(NORMALIZATIONS)),
    HParam("dge_optimizer", ALGORITHMS, _fixed("adam"), _fixed("adam"),
           f"one of {', '.join(OPTIMIZERS)}", _one_of(OPTIMIZERS)),
    HParam("dge_momentum", ALGORITHMS, _fixed(0.9), _fixed(0.9),
           "a number in [0, 1) (SGD momentum)", lambda v: _is_number(v) and 0 <= v < 1),
    # The equilibrium (DGE only).
    HParam("dge_alpha", ("DGE",), _fixed(0.5), lambda r: float(r.uniform(0.1, 0.9)),
           "a number in [0, 1] (cosine threshold of Eq. 5)", lambda v: _is_number(v) and 0 <= v <= 1),
    HParam("dge_weight_lr", ("DGE",), _fixed(0.1), lambda r: float(10 ** r.uniform(-2, 0)),
           "a number > 0 (step size of Eq. 8)", lambda v: _is_number(v) and v > 0 and np.isfinite(v)),
    HParam("dge_weight_steps", ("DGE",), _fixed(1), lambda r: int(r.choice([1, 2, 5])),
           "an integer >= 0 (steps of Eq. 8 per iteration)", lambda v: _is_int(v) and v >= 0),
    HParam("dge_weights", ("DGE",), _fixed("persistent"), _fixed("persistent"),
           f"one of {', '.join(WEIGHT_MODES)} (Eq. 8's weights kept across iterations, or reset to 1)",
           _one_of(WEIGHT_MODES)),
    HParam("dge_adjust_against", ("DGE",), _fixed("adjusted"), _fixed("adjusted"),
           f"one of {', '.join(ADJUST_AGAINST)} (Eqs. 5-6 project against the adjusted or the original S_j)",
           _one_of(ADJUST_AGAINST)),
    HParam("dge_update", ("DGE",), _fixed("sequential"), _fixed("sequential"),
           f"one of {', '.join(UPDATES)}", _one_of(UPDATES)),
    HParam("dge_adjust", ("DGE",), _fixed(True), _fixed(True),
           "true or false (Eqs. 5-6 on or off)", lambda v: isinstance(v, bool)),
    HParam("dge_reweight", ("DGE",), _fixed(True), _fixed(True),
           "true or false (Eqs. 7-8 on or off)", lambda v: isinstance(v, bool)),
    # PCGrad's choices where implementations disagree.
    HParam("pcgrad_order", ("PCGrad",), _fixed("random"), _fixed("random"),
           f"one of {', '.join(PCGRAD_ORDERS)}", _one_of(PCGRAD_ORDERS)),
    HParam("pcgrad_reduction", ("PCGrad",), _fixed("sum"), _fixed("sum"),
           f"one of {', '.join(REDUCTIONS)}", _one_of(REDUCTIONS)),
)


def hparams_of(algorithm: str) -> tuple[HParam, ...]:
    return tuple(h for h in HPARAMS if algorithm in h.algorithms)


def define(
    algorithm: str, dataset: str, random_state_for: Callable[[str], np.random.RandomState]
) -> dict[str, tuple[Any, Any]]:
    """``{name: (default, random draw)}`` for ``algorithm`` on ``dataset`` (empty for
    algorithms that are not this plugin's)."""
    entries = {}
    for h in hparams_of(algorithm):
        default = h.default(dataset)
        drawn = default if h.draw is None else h.draw(random_state_for(h.name))
        entries[h.name] = (default, drawn)
    return entries


class HParamError(ValueError):
    """A hyperparameter has a value the plugin cannot use."""


def validate(algorithm: str, hparams: dict[str, Any]) -> None:
    """Raise :class:`HParamError` naming the first key whose value is missing or not
    allowed, with the value and what is allowed."""
    for h in hparams_of(algorithm):
        if h.name not in hparams:
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} is missing; allowed: {h.allowed}")
        value = hparams[h.name]
        if not h.check(value):
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} = {value!r} is not allowed; allowed: {h.allowed}")
