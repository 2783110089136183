"""Combiners: one per method, each mapping the K x P domain-gradient matrix to the
direction(s) an optimizer step applies.

A step runs in two phases around the single host-device synchronisation of a
training step. :meth:`Combiner.prepare` queues device work and names the small
tensors it needs on the host (``Prepared.fetch``); :meth:`Combiner.plan` then decides,
on the host, what to apply, from the Gram statistics, the combiner's *state* (device
tensors the algorithm keeps for it across steps, declared by
:meth:`Combiner.initial_state` and fetched in the same transfer) and the fetched
tensors, each under its own name in its own dictionary. Directions are either rows
of a host *mixing* matrix (``mixing @ G``: DGE, GradAvg, PCGrad) or one explicit
device vector (Agr-Sum, Agr-Rand).

Diagnostics have one meaning each: ``pair_conflict_fraction`` is the share of the
K(K-1) ordered domain pairs a method projected (DGE, PCGrad), and
``coordinate_conflict_fraction`` the share of coordinates whose signs disagree
across domains (Agr-Sum, Agr-Rand).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from domainbed_dge.core import peers
from domainbed_dge.core.equilibrium import equilibrium_mixing
from domainbed_dge.core.gram import GradientGram


@dataclass(frozen=True)
class Prepared:
    """Device tensors a combiner computed before the synchronisation: ``fetch`` goes
    to the host with the Gram statistics, ``keep`` stays on the device."""

    fetch: dict[str, torch.Tensor] = field(default_factory=dict)
    keep: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What one training step applies.

    Exactly one of ``mixing`` (n x K, host float64: n optimizer steps, the i-th with
    ``mixing[i] @ G``) and ``direction`` (a P-vector on the device: one step) is set.
    ``direction_norm`` is the explicit direction's norm (the engine derives it from the
    Gram statistics for a mixing). ``diagnostics`` are Python floats; ``state`` holds
    new host values for entries of the combiner's state (DGE's weights), stored only
    if the step is taken.
    """

    diagnostics: dict[str, float]
    mixing: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    direction_norm: float | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if (self.mixing is None) == (self.direction is None):
            raise ValueError("a Plan sets exactly one of mixing and direction")
        if self.direction is not None and self.direction_norm is None:
            raise ValueError("a Plan with an explicit direction needs its direction_norm")


class Combiner(ABC):
    def initial_state(self, num_domains: int) -> dict[str, torch.Tensor]:
        """The state the algorithm keeps for this combiner (as buffers of these names,
        so that ``state_dict()`` and ``.to()`` carry it); empty by default."""
        return {}

    def prepare(self, G: torch.Tensor) -> Prepared:
        return Prepared()

    @abstractmethod
    def plan(
        self, gram: GradientGram, state: dict[str, torch.Tensor], fetched: dict[str, torch.Tensor], prepared: Prepared
    ) -> Plan:
        """Decide the step from the host statistics, the host copy of the combiner's
        state and the fetched tensors."""


class GradAvgCombiner(Combiner):
    """The mean gradient, one step (paper, Table 8)."""

    def plan(self, gram, state, fetched, prepared):
        return Plan({}, mixing=peers.grad_avg_mixing(gram.num_domains))


class PCGradCombiner(Combiner):
    """PCGrad (Yu et al., 2020), one step; ``pair_conflict_fraction`` is the share of
    ordered pairs that were projected."""

    def __init__(self, order: str, reduction: str):
        peers.check_pcgrad_options(order, reduction)
        self.order = order
        self.reduction = reduction

    def plan(self, gram, state, fetched, prepared):
        mixing, conflicts = peers.pcgrad_mixing(gram.full, order=self.order, reduction=self.reduction)
        return Plan({"pair_conflict_fraction": pair_fraction(conflicts, gram.num_domains)}, mixing=mixing)


class AgreementCombiner(Combiner):
    """Agr-Sum, or Agr-Rand with ``noise=True`` (Mansilla et al., 2021), one step;
    ``coordinate_conflict_fraction`` is the share of coordinates whose signs disagree."""

    def __init__(self, noise: bool):
        self.noise = noise

    def prepare(self, G):
        direction, conflict = peers.agreement(G, noise=self.noise)
        fetch = {
            "coordinate_conflict_fraction": conflict.sum() / conflict.numel(),
            "direction_norm": torch.linalg.vector_norm(direction),
        }
        return Prepared(fetch=fetch, keep={"direction": direction})

    def plan(self, gram, state, fetched, prepared):
        return Plan(
            {"coordinate_conflict_fraction": float(fetched["coordinate_conflict_fraction"])},
            direction=prepared.keep["direction"],
            direction_norm=float(fetched["direction_norm"]),
        )


#: Eq. 8's weights kept across iterations (Alg. 1 as written), or reset to 1 each one.
WEIGHT_MODES = ("persistent", "reset")
#: K optimizer steps, one per refined direction (the paper), or one with their mean.
UPDATES = ("sequential", "mean")


class EquilibriumCombiner(Combiner):
    """Domain Gradient Equilibrium (paper, Alg. 1 and Eqs. 2-9).

    The equilibrium weights (Eq. 8) are its state, ``equilibrium_weights``, starting
    at 1. ``weights="persistent"`` continues from them (Alg. 1 as written);
    ``"reset"`` starts every iteration from w = 1 (DESIGN 1b). ``update="sequential"``
    takes K steps, one per refined direction ``d_k`` (the paper), ``"mean"`` one step
    with their mean. ``options`` are
    :func:`~domainbed_dge.core.equilibrium.equilibrate`'s. Diagnostics: the adjusted
    pairs (Eqs. 5-6) as a count and as ``pair_conflict_fraction``, the weights, and
    ``dge_net_vs_gradavg`` (see :class:`~domainbed_dge.core.equilibrium.Equilibrium`).
    """

    STATE = "equilibrium_weights"

    def __init__(self, *, weights: str, update: str, **options):
        if weights not in WEIGHT_MODES:
            raise ValueError(f"weights {weights!r} is not allowed; allowed: {', '.join(WEIGHT_MODES)}")
        if update not in UPDATES:
            raise ValueError(f"update {update!r} is not allowed; allowed: {', '.join(UPDATES)}")
        self.options = options
        self.weights = weights
        self.update = update

    def initial_state(self, num_domains):
        return {self.STATE: torch.ones(num_domains)}

    def plan(self, gram, state, fetched, prepared):
        start = state[self.STATE] if self.weights == "persistent" else torch.ones(gram.num_domains, dtype=torch.float64)
        step = equilibrium_mixing(gram, start, **self.options)
        mixing = step.mixing if self.update == "sequential" else step.mixing.mean(dim=0, keepdim=True)
        diagnostics = {
            "dge_adjusted_pairs": float(step.adjusted_pairs),
            "pair_conflict_fraction": pair_fraction(step.adjusted_pairs, gram.num_domains),
            "dge_net_vs_gradavg": step.net_vs_gradavg,
        }
        diagnostics.update({f"dge_weight_{k}": float(w) for k, w in enumerate(step.weights)})
        return Plan(diagnostics, mixing=mixing, state={self.STATE: step.weights})


def pair_fraction(pairs: int, num_domains: int) -> float:
    """``pairs`` as a share of the K(K-1) ordered pairs (0 when K < 2)."""
    return pairs / (num_domains * (num_domains - 1)) if num_domains > 1 else 0.0


def direction_norm_ratio(plan: Plan, gram: GradientGram) -> float:
    """|applied direction, averaged over the step's updates| / |mean gradient|."""
    if plan.mixing is not None:
        norm = float(gram.norm_of_combination(plan.mixing.mean(dim=0)))
    else:
        norm = plan.direction_norm
    mean_norm = float(gram.mean_sq) ** 0.5
    return norm / mean_norm if mean_norm > 0 else 0.0
