"""Domain Gradient Equilibrium: decompose, adjust, reweight, refine (paper, Eqs. 2-9).

Everything after forming the domain-specific gradients ``S`` depends only on their
K x K Gram matrix, so the method is computed as a K x K *mixing* matrix ``M`` with
``directions = M @ G``: one pass over ``G`` for the statistics, K x K float64 work on
the host, and one matrix product to form the directions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from domainbed_dge.core.gram import GradientGram

#: Guards 0/0 in the reweighting objective without giving it a scale of its own.
TINY = torch.finfo(torch.float64).tiny


#: Eqs. 5-6 readings (DESIGN 1b): project S_i against the already adjusted S_j (as
#: written), or against the original S_j (PCGrad's convention).
ADJUST_AGAINST = ("adjusted", "original")

#: Eq. 8 readings: the gradient of Eq. 7's objective divided by sum_k |S'_k|^2, so that
#: the step size does not depend on the gradients' scale ("normalized"), or as written,
#: ``2 S' S'^T w`` ("literal").
WEIGHT_GRADIENTS = ("normalized", "literal")


@dataclass(frozen=True)
class Equilibrium:
    """One equilibrium step (Eqs. 3-9).

    ``mixing`` (K x K, host float64) maps the gradient matrix to the refined
    directions, ``d = mixing @ G``; ``weights`` are the updated domain weights (Eq. 8);
    ``adjusted_pairs`` counts the ordered pairs (i, j) whose specific gradients were
    projected in Eqs. 5-6; ``net_vs_gradavg`` is ``|sum_k w_k S'_k| / |K g_inv|``, what K
    sequential plain-SGD steps of the directions add to K steps of the mean gradient,
    relative to those (DESIGN 1b; 0 when the mean gradient is 0). :func:`equilibrate`
    also sets ``directions`` (K x P), and gives them and ``weights`` on G's device and
    dtype; :func:`equilibrium_mixing` leaves ``directions`` unset.
    """

    mixing: torch.Tensor
    weights: torch.Tensor
    adjusted_pairs: int
    net_vs_gradavg: float
    directions: torch.Tensor | None = None


def adjustment(specific_gram: torch.Tensor, alpha: float, against: str = "adjusted") -> tuple[torch.Tensor, int]:
    """Eqs. 5-6 on the Gram ``S S^T``: return ``C`` with ``S' = C S`` and the pair count.

    For i = 1..K and j != i in order, ``S_i`` is projected off ``S_j`` when their
    cosine exceeds ``alpha``. ``against="adjusted"`` (as written): ``S_i`` is updated in
    place and ``S_j`` is taken as currently adjusted. ``"original"``: ``S_i``'s running
    copy is projected off the unadjusted ``S_j``, so no row depends on another's
    adjustment.
    """
    if against not in ADJUST_AGAINST:
        raise ValueError(f"adjust_against {against!r} is not allowed; allowed: {', '.join(ADJUST_AGAINST)}")
    K = specific_gram.shape[0]
    C = torch.eye(K, dtype=torch.float64)
    others = C if against == "adjusted" else torch.eye(K, dtype=torch.float64)
    adjusted = 0
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            gram_cj = specific_gram @ others[j]
            dot = float(C[i] @ gram_cj)
            norm_j_sq = float(others[j] @ gram_cj)
            norm_i_sq = float(C[i] @ specific_gram @ C[i])
            if norm_i_sq <= 0 or norm_j_sq <= 0:
                continue
            cosine = min(1.0, dot / (norm_i_sq * norm_j_sq) ** 0.5)  # rounding can exceed 1
            if cosine > alpha:
                C[i] -= (dot / norm_j_sq) * others[j]
                adjusted += 1
    return C, adjusted


def reweighted(
    adjusted_gram: torch.Tensor, weights: torch.Tensor, weight_lr: float, weight_steps: int, gradient: str = "normalized"
) -> torch.Tensor:
    """Eqs. 7-8: projected gradient steps on ``f(w) = |sum_k w_k S'_k|^2``, whose gradient
    is ``2 S' S'^T w`` (``adjusted_gram`` is ``S' S'^T``).

    ``gradient="normalized"`` divides it by ``sum_k |S'_k|^2``, which makes the step size
    independent of the gradients' scale; ``"literal"`` takes it as Eqs. 7-8 write it, so
    the step grows with the square of the gradients. Weights stay in [0, 1].
    """
    scale = float(adjusted_gram.trace()) + TINY if gradient == "normalized" else 1.0
    for _ in range(weight_steps):
        weights = (weights - weight_lr * 2.0 * (adjusted_gram @ weights) / scale).clamp(0.0, 1.0)
    return weights


def equilibrium_mixing(
    gram: GradientGram,
    weights: torch.Tensor,
    *,
    alpha: float = 0.5,
    weight_lr: float = 0.1,
    weight_steps: int = 1,
    adjust: bool = True,
    reweight: bool = True,
    adjust_against: str = "adjusted",
    weight_gradient: str = "normalized",
) -> Equilibrium:
    """Eqs. 3-9 on the host: the mixing matrix ``M = I - diag(w) C (I - 11^T / K)``.

    ``d_k = g_k - w_k S'_k`` (Eq. 9) with ``S' = C S`` and ``S = (I - 11^T / K) G``.
    The options are :func:`equilibrate`'s.
    """
    K = gram.num_domains
    _check_options(K, weights, alpha, weight_lr, weight_steps, adjust_against, weight_gradient)
    weights = weights.detach().to("cpu", torch.float64)
    if adjust:
        C, adjusted_pairs = adjustment(gram.specific, alpha, adjust_against)
    else:
        C, adjusted_pairs = torch.eye(K, dtype=torch.float64), 0
    adjusted_gram = C @ gram.specific @ C.T
    if reweight:
        weights = reweighted(adjusted_gram, weights, weight_lr, weight_steps, weight_gradient)
    centring = torch.eye(K, dtype=torch.float64) - 1.0 / K
    mixing = torch.eye(K, dtype=torch.float64) - weights.unsqueeze(1) * (C @ centring)
    residual_sq = float((weights @ adjusted_gram @ weights).clamp(min=0))
    mean_norm = K * float(gram.mean_sq.clamp(min=0)) ** 0.5
    net_vs_gradavg = residual_sq**0.5 / mean_norm if mean_norm > 0 else 0.0
    return Equilibrium(mixing, weights, adjusted_pairs, net_vs_gradavg)


def _check_options(
    K: int, weights: torch.Tensor, alpha, weight_lr, weight_steps, adjust_against: str, weight_gradient: str
) -> None:
    """Raise ValueError naming the first option :func:`equilibrium_mixing` cannot use."""
    problems = (
        ("weights", tuple(weights.shape), tuple(weights.shape) == (K,), f"shape ({K},), one weight per domain"),
        ("alpha", alpha, isinstance(alpha, (int, float)) and 0 <= alpha <= 1, "a number in [0, 1]"),
        ("weight_lr", weight_lr, isinstance(weight_lr, (int, float)) and weight_lr > 0, "a number > 0"),
        ("weight_steps", weight_steps, isinstance(weight_steps, int) and not isinstance(weight_steps, bool)
         and weight_steps >= 0, "an integer >= 0"),
        ("adjust_against", adjust_against, adjust_against in ADJUST_AGAINST, ", ".join(ADJUST_AGAINST)),
        ("weight_gradient", weight_gradient, weight_gradient in WEIGHT_GRADIENTS, ", ".join(WEIGHT_GRADIENTS)),
    )
    for name, value, ok, allowed in problems:
        if not ok:
            raise ValueError(f"{name} {value!r} is not allowed; allowed: {allowed}")


def equilibrate(
    G: torch.Tensor,
    weights: torch.Tensor,
    *,
    alpha: float = 0.5,
    weight_lr: float = 0.1,
    weight_steps: int = 1,
    adjust: bool = True,
    reweight: bool = True,
    adjust_against: str = "adjusted",
    weight_gradient: str = "normalized",
) -> Equilibrium:
    """Refine the K x P domain gradients ``G`` into K equilibrium directions.

    ``adjust`` and ``reweight`` switch Eqs. 5-6 and 7-8 off (Table 6);
    ``adjust_against`` is the reading of Eqs. 5-6 (see :func:`adjustment`) and
    ``weight_gradient`` that of Eq. 8 (see :func:`reweighted`).

    >>> G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> result = equilibrate(G, torch.ones(2), adjust=False)
    >>> result.directions  # adjustment off: every direction is the mean gradient
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]])
    >>> result.weights
    tensor([1., 1.])
    """
    step = equilibrium_mixing(
        GradientGram.of(G),
        weights,
        alpha=alpha,
        weight_lr=weight_lr,
        weight_steps=weight_steps,
        adjust=adjust,
        reweight=reweight,
        adjust_against=adjust_against,
        weight_gradient=weight_gradient,
    )
    directions = step.mixing.to(G.device, G.dtype) @ G
    return replace(step, weights=step.weights.to(G.device, G.dtype), directions=directions)
