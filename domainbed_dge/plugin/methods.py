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
import math
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
from domainbed_dge.core.equilibrium import ADJUST_AGAINST, WEIGHT_GRADIENTS
from domainbed_dge.core.mixstyle import MIXES, MixStyle
from domainbed_dge.core.peers import PCGRAD_ORDERS, PCGRAD_REDUCTIONS
from domainbed_dge.core.random_convolutions import (
    CONSISTENCY_VIEWS,
    KERNEL_SIZES,
    PIXEL_RANGES,
    VARIANTS,
    ProgressiveRandConv,
    RandConv,
)
from domainbed_dge.core.sharpness import GSAMRule, SAGMRule
from domainbed_dge.plugin.hparams import (
    ENGINE_HPARAMS,
    HOST_HPARAMS,
    OPTIMIZER_HPARAMS,
    HParam,
    LABELS,
    SMALL_IMAGES,
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
        weight_gradient=hparams["dge_weight_gradient"],
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
    choice("dge_weight_gradient", WEIGHT_GRADIENTS, "Eq. 8's gradient divided by sum_k |S'_k|^2, or as written"),
    choice("dge_update", UPDATES, "K optimizer steps, one per d_k, or one step with their mean"),
    _flag("dge_adjust", "Eqs. 5-6 on or off"),
    _flag("dge_reweight", "Eqs. 7-8 on or off"),
)

PCGRAD_HPARAMS = (
    choice("pcgrad_order", PCGRAD_ORDERS, "a fresh random order over j != i per i, or increasing j"),
    choice("pcgrad_reduction", PCGRAD_REDUCTIONS, "sum or average the projected gradients"),
)

# GSAM: ResNets on ImageNet, rho_max 0.04, alpha 0.01 (Zhuang et al., ICLR 2022, Table 4);
# rho_max is the constant rho under a constant learning rate. Random search: log-uniform
# rho in [0.01, 0.1] and alpha in [0.001, 0.1] (the paper's ResNet settings inside).
GSAM_HPARAMS = (
    HParam("gsam_rho", fixed(0.04), lambda r: float(10 ** r.uniform(-2, -1)),
           "a number >= 0 (radius of the perturbation rho g/|g|)", lambda v: is_number(v) and v >= 0),
    HParam("gsam_alpha", fixed(0.01), lambda r: float(10 ** r.uniform(-3, -1)),
           "a number in [0, 1] (weight of the surrogate-gap term -alpha g_perp; 0 is SAM)",
           lambda v: is_number(v) and 0 <= v <= 1),
)

# SAGM: rho 0.05 (what the released code's constant scheduler runs), alpha 0.001
# (Wang-pengfei/SAGM@69d4d9d2a390: hparams_registry.py:90-92, algorithms.py:138-139).
# Random search: rho from the released draw {0.01, 0.02, 0.05, 0.1}; alpha log-uniform in
# [1e-4, 1e-2] around the authors' tuned 5e-4 and 1e-3 (the released draw,
# {0.01, ..., 0.1}, lies 10-100 times above them).
SAGM_HPARAMS = (
    HParam("sagm_rho", fixed(0.05), lambda r: float(r.choice([0.01, 0.02, 0.05, 0.1])),
           "a number >= 0 (radius of the ascent step rho g/|g|)", lambda v: is_number(v) and v >= 0),
    HParam("sagm_alpha", fixed(0.001), lambda r: float(10 ** r.uniform(-4, -2)),
           "a number in [0, 1] (the perturbation's -alpha g, on the learning rate's scale)",
           lambda v: is_number(v) and 0 <= v <= 1),
)

# MixStyle: p 0.5, alpha 0.1, eps 1e-6, random mixing (Dassl@c61a1b5 dassl/modeling/ops/mixstyle.py:60),
# after the stages of the authors' setting for the dataset (mixstyle-release imcls/README.md):
# layers 1-2 on OfficeHome (resnet18_ms_l12), layers 1-3 on PACS (resnet18_ms_l123) and on
# the datasets they did not run. Stages 1-3 only, as Dassl's MixStyle ResNets allow. Random
# search: p uniform in [0.2, 0.8]; alpha uniform in [0.05, 0.5] (the released 0.1 and the
# README's earlier 0.3 inside); layers one of the lower-stage sets [1], [1, 2], [1, 2, 3]
# (the authors: bottom layers, never the last); eps, a numerical guard, and mix are not searched.
MIXSTYLE_LAYER_SETS = ([1], [1, 2], [1, 2, 3])
#: The authors' stages per dataset, where they differ from the PACS setting [1, 2, 3].
MIXSTYLE_AUTHORS_LAYERS = {"OfficeHome": [1, 2]}
MIXSTYLE_STAGES = (1, 2, 3)


def mixstyle_layers_of(dataset: str) -> list[int]:
    """The authors' MixStyle stages for ``dataset``: [1, 2] on OfficeHome, else [1, 2, 3]."""
    return list(MIXSTYLE_AUTHORS_LAYERS.get(dataset, MIXSTYLE_LAYER_SETS[-1]))


def is_stage_list(value: Any) -> bool:
    """A non-empty list of distinct featurizer stage numbers among 1..3."""
    return (isinstance(value, list) and bool(value) and all(is_int(v) and v in MIXSTYLE_STAGES for v in value)
            and len(set(value)) == len(value))


MIXSTYLE_HPARAMS = (
    HParam("mixstyle_p", fixed(0.5), lambda r: float(r.uniform(0.2, 0.8)),
           "a number in [0, 1] (probability that a MixStyle call mixes)", lambda v: is_number(v) and 0 <= v <= 1),
    HParam("mixstyle_alpha", fixed(0.1), lambda r: float(r.uniform(0.05, 0.5)),
           "a number > 0 (lam ~ Beta(alpha, alpha))", lambda v: is_number(v) and v > 0),
    HParam("mixstyle_eps", fixed(1e-6), None,
           "a number > 0 (added to the variance before the square root)", lambda v: is_number(v) and v > 0),
    HParam("mixstyle_layers", mixstyle_layers_of,
           lambda r: list(MIXSTYLE_LAYER_SETS[r.randint(len(MIXSTYLE_LAYER_SETS))]),
           "a non-empty list of distinct stage numbers among 1, 2, 3 (the featurizer stages MixStyle follows)",
           is_stage_list),
    choice("mixstyle_mix", MIXES, "pair each sample with a random one, or the batch's halves as two domains"),
)


# RandConv: the released digits scripts (wildphoton/RandConv@861a2319dc28 exp_mnist10k.sh:12-16):
# kernel sizes 1, 3, 5, 7; img with identity probability 0.5 and lambda 5 (mix: lambda 10;
# code default 1). PACS settings were never released. Random search: kernel sizes one of the
# lists [1, 3], [1, 3, 5], [1, 3, 5, 7] (growing multi-scale sets, as the paper's RC_1-k rows);
# identity probability uniform in [0.2, 0.8]; lambda log-uniform in [1, 20] (1, 5 and 10 inside).
RANDCONV_KERNEL_SETS = ([1, 3], [1, 3, 5], list(KERNEL_SIZES))


def is_kernel_size_list(value: Any) -> bool:
    """A non-empty list of distinct odd integers >= 1."""
    return (isinstance(value, list) and bool(value) and all(is_int(v, 1) and v % 2 == 1 for v in value)
            and len(set(value)) == len(value))


RANDCONV_HPARAMS = (
    choice("randconv_variant", VARIANTS, "keep the image with probability identity_prob or convolve it; "
           "or a conv(x) + (1 - a) x with a ~ U(0, 1)"),
    HParam("randconv_kernel_sizes", lambda _: list(KERNEL_SIZES),
           lambda r: list(RANDCONV_KERNEL_SETS[r.randint(len(RANDCONV_KERNEL_SETS))]),
           "a non-empty list of distinct odd integers >= 1 (kernel sizes drawn uniformly per batch)",
           is_kernel_size_list),
    HParam("randconv_identity_prob", fixed(0.5), lambda r: float(r.uniform(0.2, 0.8)),
           "a number in [0, 1] (probability that the img variant keeps the image)",
           lambda v: is_number(v) and 0 <= v <= 1),
    HParam("randconv_consistency_weight", fixed(5.0), lambda r: float(10 ** r.uniform(0, math.log10(20))),
           "a number >= 0 (lambda of the consistency loss; 0 turns it off)", lambda v: is_number(v) and v >= 0),
    choice("randconv_consistency_views", CONSISTENCY_VIEWS,
           "the extra views convolve the first view again, as the released scripts, or the clean image"),
    choice("randconv_pixel_range", PIXEL_RANGES, "convolve the batch as given, or [0, 1] pixels as the [-1, 1] "
           "of the authors' digits code: (RC(2x - 1) + 1) / 2"),
)

# Pro-RandConv: no official code; L_max 10, b_Delta 0.2 for 32 x 32 digits and 0.5 for 224 x 224
# PACS, gamma and beta std 0.5, as third-party re-implementations give the paper's Sec. 3 and
# implementation details (unverified; README: "Pro-RandConv: where each constant comes from").
# Default b_Delta: 0.2 for DomainBed's 28 x 28 datasets, 0.5 otherwise. Random search: L_max
# an integer in [5, 15], b_Delta uniform in [0.1, 0.6], the affine std uniform in [0.25, 0.75].
PRORANDCONV_HPARAMS = (
    HParam("prorandconv_max_repeats", fixed(10), lambda r: int(r.randint(5, 16)),
           "an integer >= 1 (L_max: the block is applied L ~ U{1..L_max} times)", lambda v: is_int(v, 1)),
    HParam("prorandconv_offset_std", lambda dataset: 0.2 if dataset in SMALL_IMAGES else 0.5,
           lambda r: float(r.uniform(0.1, 0.6)),
           "a number >= 0.0001 (b_Delta: the offsets' std is drawn from U(1e-4, b_Delta))",
           lambda v: is_number(v) and v >= 1e-4),
    HParam("prorandconv_affine_std", fixed(0.5), lambda r: float(r.uniform(0.25, 0.75)),
           "a number >= 0 (std of the random affine's gamma and beta)", lambda v: is_number(v) and v >= 0),
    choice("prorandconv_pixel_range", PIXEL_RANGES, "apply the blocks to the batch as given, or to [0, 1] pixels "
           "as to [-1, 1] ones, the tanh output mapped back to (0, 1): (B(2x - 1) + 1) / 2"),
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
    Method(
        "GSAM", "GSAM",
        "GSAM (Zhuang et al., ICLR 2022): ERM's loss on the concatenated batch; the gradient g_p at the "
        "perturbed weights w + rho g/|g| on the same batch, and a step along g_p - alpha g_perp, g_perp being "
        "g's component orthogonal to g_p (alpha = 0: SAM). BatchNorm statistics are updated once per step.",
        lambda h: GSAMRule(rho=h["gsam_rho"], alpha=h["gsam_alpha"]),
        GSAM_HPARAMS,
        engine="sharpness",
    ),
    Method(
        "SAGM", "SAGM",
        "SAGM (Wang et al., CVPR 2023), as its released code runs it: ERM's loss on the concatenated batch; "
        "the gradient g_p at the perturbed weights w + rho g/|g| - alpha g on the same batch, and a step along "
        "(g + g_p)/2. BatchNorm statistics are updated once per step.",
        lambda h: SAGMRule(rho=h["sagm_rho"], alpha=h["sagm_alpha"]),
        SAGM_HPARAMS,
        engine="sharpness",
    ),
    Method(
        "MixStyle", "MixStyle",
        "MixStyle (Zhou et al., ICLR 2021): ERM's loss on the concatenated batch, with each sample's "
        "per-channel feature mean and standard deviation mixed, with probability p per call, with those of "
        "a random other sample (lam ~ Beta(alpha, alpha)) after the featurizer stages mixstyle_layers "
        "(ResNet layer1-3 by default, the PACS setting). Identity in eval mode.",
        lambda h: MixStyle(h["mixstyle_p"], h["mixstyle_alpha"], h["mixstyle_eps"], h["mixstyle_mix"]),
        MIXSTYLE_HPARAMS,
        engine="mixstyle",
    ),
    Method(
        "RandConv", "RandConv",
        "RandConv (Xu et al., ICLR 2021): ERM's loss on the concatenated batch convolved by one random "
        "convolution per step (kernel size from randconv_kernel_sizes, He-normal weights, no bias), kept "
        "unchanged with probability randconv_identity_prob (img) or blended with the image (mix), plus "
        "randconv_consistency_weight times the KL consistency of three views' predictions.",
        lambda h: RandConv(h["randconv_kernel_sizes"], h["randconv_variant"], h["randconv_identity_prob"],
                           h["randconv_consistency_weight"], h["randconv_consistency_views"], h["randconv_pixel_range"]),
        RANDCONV_HPARAMS,
        engine="random_convolution",
    ),
    Method(
        "ProRandConv", "Pro-RandConv",
        "Pro-RandConv (Choi et al., CVPR 2023): ERM's loss on the concatenated batch passed L ~ U{1..L_max} "
        "times through one random block per step: a deformable 3 x 3 convolution with Gaussian-smoothed "
        "He-normal weights and random offsets, per-channel standardisation, a random affine, tanh.",
        lambda h: ProgressiveRandConv(h["prorandconv_max_repeats"], h["prorandconv_offset_std"],
                                      h["prorandconv_affine_std"], pixel_range=h["prorandconv_pixel_range"]),
        PRORANDCONV_HPARAMS,
        engine="random_convolution",
    ),
)
NAMES = tuple(method.name for method in METHODS)
BY_NAME = {method.name: method for method in METHODS}
#: The prefix of the keys the plugin gives DomainBed's own algorithms (``HOST_HPARAMS``).
HOST_PREFIX = "dge_"


def suggestion(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest of ``known`` (difflib, ignoring case),
    else ``"."``."""
    by_lower = {candidate.lower(): candidate for candidate in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else "."


def hparams_of(algorithm: str) -> tuple[HParam, ...]:
    """The plugin's hyperparameters of ``algorithm``: for its own methods the views'
    and the optimiser's for the gradient engine, the optimiser's for the others, then
    the method's own; for any other name (DomainBed's algorithms) ``HOST_HPARAMS``,
    views as domains and the comparison's optimiser, off by default."""
    if algorithm not in BY_NAME:
        return HOST_HPARAMS
    method = BY_NAME[algorithm]
    if method.engine == "gradients":
        return (num_views(method.min_domains), *ENGINE_HPARAMS, *method.hparams)
    return (*OPTIMIZER_HPARAMS, *method.hparams)


def define(
    algorithm: str, dataset: str, random_state_for: Callable[[str], np.random.RandomState]
) -> dict[str, tuple[Any, Any]]:
    """``{name: (default, random draw)}`` for ``algorithm`` on ``dataset`` (see
    :func:`hparams_of`). ``random_state_for(name)`` gives each name its own seeded
    RandomState, as DomainBed's registry does."""
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
    with the value and what is allowed.

    DomainBed's own algorithms keep DomainBed's rules for DomainBed's keys: an unknown
    key is ignored unless it has the plugin's prefix ``dge_``, and a missing plugin key
    takes its default (off)."""
    host = algorithm not in BY_NAME
    if known is not None:
        allowed = set(known) | set(LABELS)
        for name in hparams:
            if name not in allowed and not (host and not name.startswith(HOST_PREFIX)):
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
        if h.name not in hparams and host:
            continue
        if h.name not in hparams:
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} is missing; allowed: {h.allowed}")
        value = hparams[h.name]
        if not h.check(value):
            raise HParamError(f"{algorithm}: hyperparameter {h.name!r} = {value!r} is not allowed; allowed: {h.allowed}")
