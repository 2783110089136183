"""The methods DGE is compared with, on the same K x P matrix of domain gradients.

* GradAvg (paper, Table 8): the mean gradient.
* PCGrad (Yu et al., 2020, Alg. 1): each ``g_i`` is projected, in a fresh random
  order over ``j != i``, off every *original* ``g_j`` it conflicts with; the results
  are summed. PCGrad is linear in ``G`` once the conflicts are known, so it is
  computed from the Gram ``G G^T`` as a mixing vector, like the equilibrium.
* Agr-Sum and Agr-Rand (Mansilla et al., ICCV 2021): coordinate-wise sign agreement.
"""

from __future__ import annotations

import torch

from domainbed_dge.core.gram import GradientGram


def grad_avg_mixing(num_domains: int) -> torch.Tensor:
    """The 1 x K mixing of the mean gradient."""
    return torch.full((1, num_domains), 1.0 / num_domains, dtype=torch.float64)


PCGRAD_ORDERS = ("random", "fixed")
PCGRAD_REDUCTIONS = ("sum", "mean")


def check_pcgrad_options(order: str, reduction: str) -> None:
    """Raise ValueError naming an ``order`` or ``reduction`` PCGrad does not have."""
    if order not in PCGRAD_ORDERS:
        raise ValueError(f"PCGrad order {order!r} is not allowed; allowed: {', '.join(PCGRAD_ORDERS)}")
    if reduction not in PCGRAD_REDUCTIONS:
        raise ValueError(f"PCGrad reduction {reduction!r} is not allowed; allowed: {', '.join(PCGRAD_REDUCTIONS)}")


def pcgrad_mixing(
    full_gram: torch.Tensor, *, order: str = "random", reduction: str = "sum", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    """PCGrad as a 1 x K mixing vector from ``G G^T``, and the number of conflicting
    ordered pairs met (``g_i . g_j < 0`` for the projected ``g_i``).

    ``order="random"`` draws a fresh permutation of ``j != i`` for each ``i`` (the
    paper); ``"fixed"`` uses increasing ``j``. ``reduction`` sums (the paper) or
    averages the projected gradients.
    """
    check_pcgrad_options(order, reduction)
    K = full_gram.shape[0]
    coefficients = torch.eye(K, dtype=torch.float64)
    conflicts = 0
    for i in range(K):
        others = [j for j in range(K) if j != i]
        if order == "random":
            others = [others[t] for t in torch.randperm(len(others), generator=generator).tolist()]
        for j in others:
            dot = float(coefficients[i] @ full_gram[:, j])
            norm_j_sq = float(full_gram[j, j])
            if dot < 0 and norm_j_sq > 0:
                coefficients[i, j] -= dot / norm_j_sq
                conflicts += 1
    mixing = coefficients.sum(dim=0, keepdim=True)
    if reduction == "mean":
        mixing /= K
    return mixing, conflicts


def agreement_mask(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate: ``agree`` where every ``g_k`` is non-zero with one sign, and
    ``conflict`` where it does not, unless the coordinate is zero in every domain."""
    positive = (G > 0).all(dim=0)
    negative = (G < 0).all(dim=0)
    agree = positive | negative
    conflict = ~agree & (G != 0).any(dim=0)
    return agree, conflict


def agreement(
    G: torch.Tensor, *, noise: bool, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Agr-Sum's direction (``noise=False``) or Agr-Rand's (``noise=True``), and the
    conflict mask it was built from, with one pass of :func:`agreement_mask`.

    Agr-Sum keeps ``sum_k g_k`` where all domains agree and zeroes the rest. Agr-Rand
    fills the conflicting coordinates with N(0, 1) draws scaled by the mean absolute
    value of the kept coordinates (zero when none is kept).
    """
    agree, conflict = agreement_mask(G)
    kept = torch.where(agree, G.sum(dim=0), 0.0)
    if not noise:
        return kept, conflict
    scale = kept.abs().sum() / agree.sum().clamp(min=1)
    draws = torch.randn(G.shape[1], generator=generator, device=G.device, dtype=G.dtype)
    return torch.where(conflict, draws * scale, kept), conflict


def agr_sum(G: torch.Tensor) -> torch.Tensor:
    """Agr-Sum: ``sum_k g_k`` on the coordinates where all domains agree, else 0.

    >>> agr_sum(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0., 2., 2.])
    """
    return agreement(G, noise=False)[0]


def agr_rand(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Agr-Rand: Agr-Sum, with scaled N(0, 1) draws on the conflicting coordinates."""
    return agreement(G, noise=True, generator=generator)[0]


def grad_avg(G: torch.Tensor) -> torch.Tensor:
    """GradAvg: the mean of the domain gradients.

    >>> grad_avg(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([1., 1., 1.])
    """
    return (grad_avg_mixing(G.shape[0]).to(G.device, G.dtype) @ G).squeeze(0)


def pcgrad(
    G: torch.Tensor, *, order: str = "random", reduction: str = "sum", generator: torch.Generator | None = None
) -> torch.Tensor:
    """PCGrad's update direction for the K x P matrix ``G``.

    >>> pcgrad(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.5848, 3.8012, 3.8012])
    """
    mixing, _ = pcgrad_mixing(GradientGram.of(G).full, order=order, reduction=reduction, generator=generator)
    return (mixing.to(G.device, G.dtype) @ G).squeeze(0)
