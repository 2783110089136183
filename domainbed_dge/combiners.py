"""Combiners: one per method, each mapping the K x P domain-gradient matrix to the
direction(s) an optimizer step applies.

A step runs in two phases around the single host-device synchronisation of a
training step. :meth:`Combiner.prepare` queues device work and names the small
tensors it needs on the host; :meth:`Combiner.plan` then decides, on the host, what
to apply. Directions are either rows of a host *mixing* matrix (``mixing @ G``:
DGE, GradAvg, PCGrad) or one explicit device vector (Agr-Sum, Agr-Rand).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from domainbed_dge import peers
from domainbed_dge.equilibrium import equilibrium_mixing
from domainbed_dge.gram import GradientGram


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
    new host values for entries of the algorithm's ``combiner_state()`` (DGE's
    ``weights``), stored only if the step is taken.
    """

    diagnostics: dict[str, float]
    mixing: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    direction_norm: float | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)


class Combiner(ABC):
    def prepare(self, G: torch.Tensor) -> Prepared:
        return Prepared()

    @abstractmethod
    def plan(self, gram: GradientGram, fetched: dict[str, torch.Tensor], prepared: Prepared) -> Plan:
        """Decide the step from the host statistics and the fetched tensors."""


class GradAvgCombiner(Combiner):
    """The mean gradient, one step (paper, Table 8)."""

    def plan(self, gram, fetched, prepared):
        return Plan({"conflict_fraction": 0.0}, mixing=peers.grad_avg_mixing(gram.num_domains))


class PCGradCombiner(Combiner):
    """PCGrad (Yu et al., 2020), one step; ``conflict_fraction`` is the share of ordered
    pairs that were projected."""

    def __init__(self, order: str, reduction: str):
        self.order = order
        self.reduction = reduction

    def plan(self, gram, fetched, prepared):
        mixing, conflicts = peers.pcgrad_mixing(gram.full, order=self.order, reduction=self.reduction)
        return Plan({"conflict_fraction": _pair_fraction(conflicts, gram.num_domains)}, mixing=mixing)


class AgreementCombiner(Combiner):
    """Agr-Sum, or Agr-Rand with ``noise=True`` (Mansilla et al., 2021), one step;
    ``conflict_fraction`` is the share of coordinates whose signs disagree."""

    def __init__(self, noise: bool):
        self.noise = noise

    def prepare(self, G):
        direction, conflict = peers.agreement(G, noise=self.noise)
        fetch = {
            "conflict_fraction": conflict.sum() / conflict.numel(),
            "direction_norm": torch.linalg.vector_norm(direction),
        }
        return Prepared(fetch=fetch, keep={"direction": direction})

    def plan(self, gram, fetched, prepared):
        return Plan(
            {"conflict_fraction": float(fetched["conflict_fraction"])},
            direction=prepared.keep["direction"],
            direction_norm=float(fetched["direction_norm"]),
        )


class EquilibriumCombiner(Combiner):
    """Domain Gradient Equilibrium (paper, Alg. 1 and Eqs. 2-9).

    The equilibrium weights (Eq. 8) are the algorithm's state, not the combiner's:
    the engine fetches them with the step's statistics as ``fetched["weights"]``, so
    they follow the module through ``.to()`` and ``load_state_dict()``.
    ``weights="persistent"`` continues from them (Alg. 1 as written); ``"reset"``
    starts every iteration from w = 1 (DESIGN 1b). ``update="sequential"`` takes K
    steps, one per refined direction ``d_k`` (the paper), ``"mean"`` one step with
    their mean. ``options`` are :func:`~domainbed_dge.equilibrium.equilibrate`'s.
    ``conflict_fraction`` is the share of ordered pairs adjusted by Eqs. 5-6.
    """

    def __init__(self, *, weights: str, update: str, **options):
        self.options = options
        self.weights = weights
        self.update = update

    def plan(self, gram, fetched, prepared):
        start = fetched["weights"] if self.weights == "persistent" else torch.ones(gram.num_domains, dtype=torch.float64)
        step = equilibrium_mixing(gram, start, **self.options)
        mixing = step.mixing if self.update == "sequential" else step.mixing.mean(dim=0, keepdim=True)
        diagnostics = {
            "dge_adjusted_pairs": float(step.adjusted_pairs),
            "conflict_fraction": _pair_fraction(step.adjusted_pairs, gram.num_domains),
            "dge_net_vs_gradavg": step.net_vs_gradavg,
        }
        diagnostics.update({f"dge_weight_{k}": float(w) for k, w in enumerate(step.weights)})
        return Plan(diagnostics, mixing=mixing, state={"weights": step.weights})


def _pair_fraction(pairs: int, num_domains: int) -> float:
    return pairs / (num_domains * (num_domains - 1)) if num_domains > 1 else 0.0
