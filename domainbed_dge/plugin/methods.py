"""The method registry: one entry per algorithm this plugin adds to DomainBed.

An entry holds everything that differs between methods: the DomainBed name, the
label in tables and plots, what it does (the algorithm class's docstring), the engine
that trains it and the core object it builds from the run's hyperparameters (a
combiner for the gradient engine), its own hyperparameters, and how many domains it
needs. The algorithm classes (``plugin.algorithms``), the hyperparameter table
(:func:`define`), the rows of the tables and plots, and the benchmark's method list
all derive from :data:`METHODS`. Adding a method means its math in ``core``, its
engine's glue in ``plugin`` (when no engine fits yet) and one entry here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from domainbed_dge.core.combiners import (
    UPDATES,
    WEIGHT_MODES,
    AgreementCombiner,
    EquilibriumCombiner,
    GradAvgCombiner,
    PCGradCombiner,
)
from domainbed_dge.core.equilibrium import ADJUST_AGAINST
from domainbed_dge.core.peers import PCGRAD_ORDERS, PCGRAD_REDUCTIONS
from domainbed_dge.plugin.hparams import (
    ENGINE_HPARAMS,
    OPTIMIZER_HPARAMS,
    HParam,
    LABELS,
    HParamError,
    choice,
    fixed,
    is_int,
    is_number,
    num_views,
)


#: How a method trains, each a base class of ``plugin.algorithms``: ``gradients``, the
#: gradient engine (one gradient per domain, combined; ``build`` gives the combiner);
#: the others train ERM's objective on the concatenated batch, changed by the object
#: ``build`` gives: ``sharpness`` (a sharpness-aware direction), ``random_convolution``
#: (random convolutions of the input), ``mixstyle`` (feature-statistics mixing).
ENGINES = ("gradients", "sharpness", "random_convolution", "mixstyle")


@dataclass(frozen=True)
class Method:
    """One method: ``name`` in DomainBed (``--algorithm``), ``label`` of its rows in
    tables and plots, ``summary`` (its class docstring), ``build``, which makes the
    method's core object (a combiner, a sharpness rule, an augmenter, ...) from a run's
    hyperparameters, the ``engine`` that trains with that object (one of
    :data:`ENGINES`), its own ``hparams`` beyond the engine's, and, for the gradient
    engine, ``min_domains`` (the least ``dge_num_views`` it accepts)."""

    name: str
    label: str
    summary: str
    build: Callable[[dict], Any]
    hparams: tuple[HParam, ...] = ()
    min_domains: int = 2
    engine: str = "gradients"

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"{self.name}: engine {self.engine!r} is not allowed; allowed: {', '.join(ENGINES)}")


def equilibrium_options(hparams: dict) -> dict:
    """The keyword options of :func:`~domainbed_dge.core.equilibrium.equilibrate` that
    DGE's hyperparameters set."""
    return dict(
        alpha=hparams["dge_alpha"],
        weight_lr=hparams["dge_weight_lr"],
        weight_steps=hparams["dge_weight_steps"],
        adjust=hparams["dge_adjust"],
        reweight=hparams["dge_reweight"],
        adjust_against=hparams["dge_adjust_against"],
    )


def _flag(name: str, what: str) -> HParam:
    return HParam(name, fixed(True), None, f"true or false ({what})", lambda v: isinstance(v, bool))


DGE_HPARAMS = (
    HParam("dge_alpha", fixed(0.5), lambda r: float(r.uniform(0.1, 0.9)),
           "a number in [0, 1] (cosine threshold of Eq. 5)", lambda v: is_number(v) and 0 <= v <= 1),
    HParam("dge_weight_lr", fixed(0.1), lambda r: float(10 ** r.uniform(-2, 0)),
           "a number > 0 (step size of Eq. 8)", lambda v: is_number(v) and v > 0),
    HParam("dge_weight_steps", fixed(1), lambda r: int(r.choice([1, 2, 5])),
           "an integer >= 0 (steps of Eq. 8 per iteration)", lambda v: is_int(v, 0)),
    choice("dge_weights", WEIGHT_MODES, "Eq. 8's weights kept across iterations, or reset to 1 each one"),
    choice("dge_adjust_against", ADJUST_AGAINST, "Eqs. 5-6 project against the adjusted or the original S_j"),
    choice("dge_update", UPDATES, "K optimizer steps, one per d_k, or one step with their mean"),
    _flag("dge_adjust", "Eqs. 5-6 on or off"),
    _flag("dge_reweight", "Eqs. 7-8 on or off"),
)

PCGRAD_HPARAMS = (
    choice("pcgrad_order", PCGRAD_ORDERS, "a fresh random order over j != i per i, or increasing j"),
    choice("pcgrad_reduction", PCGRAD_REDUCTIONS, "sum or average the projected gradients"),
)

METHODS = (
    Method(
        "DGE", "DGE",
        "Domain Gradient Equilibrium (paper, Alg. 1): decompose the domain gradients into invariant and "
        "specific parts (Eqs. 2-3), project conflicting specific parts off each other (Eqs. 5-6), reweight "
        "them towards equilibrium (Eqs. 7-8) and refine each domain's gradient (Eq. 9).",
        lambda h: EquilibriumCombiner(weights=h["dge_weights"], update=h["dge_update"], **equilibrium_options(h)),
        DGE_HPARAMS,
    ),
    Method(
        "GradAvg", "GradAvg",
        "Gradient averaging over the same domains (paper, Table 8). With one clean view (dge_num_views 1, "
        "dge_augment none) it is the paper's vanilla Baseline, trained with the engine's optimizer; with one "
        "augmented view, 'Baseline + X' (Table 9).",
        lambda h: GradAvgCombiner(),
        min_domains=1,
    ),
    Method(
        "AgrSum", "Agr-Sum",
        "Agr-Sum (Mansilla et al., ICCV 2021): sum where all domain gradients agree in sign.",
        lambda h: AgreementCombiner(noise=False),
    ),
    Method(
        "AgrRand", "Agr-Rand",
        "Agr-Rand (Mansilla et al., ICCV 2021): Agr-Sum with scaled noise on conflicting coordinates.",
        lambda h: AgreementCombiner(noise=True),
    ),
    Method(
        "PCGrad", "PCGrad",
        "PCGrad (Yu et al., NeurIPS 2020): project conflicting domain gradients, then sum.",
        lambda h: PCGradCombiner(h["pcgrad_order"], h["pcgrad_reduction"]),
        PCGRAD_HPARAMS,
    ),
)
NAMES = tuple(method.name for method in METHODS)
BY_NAME = {method.name: method for method in METHODS}


def suggestion(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest of ``known`` (difflib, ignoring case),
    else ``"."``."""
    by_lower = {candidate.lower(): candidate for candidate in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else "."


def hparams_of(algorithm: str) -> tuple[HParam, ...]:
    """The plugin's hyperparameters of ``algorithm`` (none for DomainBed's own): the
    views' and the optimiser's for the gradient engine, the optimiser's for the others,
    then the method's own."""
    if algorithm not in BY_NAME:
        return ()
    method = BY_NAME[algorithm]
    if method.engine == "gradients":
        return (num_views(method.min_domains), *ENGINE_HPARAMS, *method.hparams)
    return (*OPTIMIZER_HPARAMS, *method.hparams)


def define(
    algorithm: str, dataset: str, random_state_for: Callable[[str], np.random.RandomState]
) -> dict[str, tuple[Any, Any]]:
    """``{name: (default, random draw)}`` for ``algorithm`` on ``dataset`` (empty for
    algorithms that are not this plugin's). ``random_state_for(name)`` gives each name
    its own seeded RandomState, as DomainBed's registry does."""
    entries = {}
    for h in hparams_of(algorithm):
        default = h.default(dataset)
        drawn = default if h.draw is None else h.draw(random_state_for(h.name))
        entries[h.name] = (default, drawn)
    return entries


def validate(algorithm: str, hparams: dict[str, Any], known: Iterable[str] | None = None) -> None:
    """Raise :class:`HParamError` naming the first key that is unknown (when ``known``,
    the names DomainBed's registry defines for ``algorithm``, is given; the labels of
    ``hparams.LABELS`` are always known), or whose value is missing or not allowed,
    with the value and what is allowed."""
    if known is not None:
        allowed = set(known) | set(LABELS)
        for name in hparams:
            if name not in allowed:
                raise HParamError(f"{algorithm}: hyperparameter {name!r} is not one of {algorithm}'s"
                                  f"{suggestion(name, allowed)} Known: {', '.join(sorted(allowed))}")
    variant, targets = (hparams.get(name) for name in LABELS)
    if variant is not None and not (isinstance(variant, str) and variant):
        raise HParamError(f"{algorithm}: hyperparameter {LABELS[0]!r} = {variant!r} is not allowed; "
                          "allowed: a non-empty string (the row's label)")
    if targets is not None and not (isinstance(targets, list) and targets and all(is_int(env, 0) for env in targets)):
        raise HParamError(f"{algorithm}: hyperparameter {LABELS[1]!r} = {targets!r} is not allowed; "
                          "allowed: a non-empty list of target environment indices (integers >= 0)")
    for h in hparams_of(algorithm):
        if h.name not in hparams:
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} is missing; allowed: {h.allowed}")
        value = hparams[h.name]
        if not h.check(value):
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} = {value!r} is not allowed; allowed: {h.allowed}")
