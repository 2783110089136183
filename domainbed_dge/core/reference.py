"""A literal, per-parameter equilibrium: the naive reference the engine is checked and timed against.

Each domain gradient is kept as a list of per-parameter tensors from
``torch.autograd.grad``, and decompose, adjust, reweight and refine (DESIGN section 1,
steps 3-6; paper, Eqs. 2-9) loop over domains and parameters in Python, reading every
inner product the control flow needs back to the host. This is how the method reads
on paper and how ports of gradient-surgery methods usually write it; the Gram-space
``equilibrate`` and the engine (``domainbed_dge.plugin.algorithms.DGE``) must give
the same result, only faster.
"""

from __future__ import annotations

import torch


#: One tensor per trainable parameter.
Gradient = list[torch.Tensor]

#: Guards 0/0 in the reweighting objective, as the engine does.
TINY = torch.finfo(torch.float64).tiny


def dot(a: Gradient, b: Gradient) -> torch.Tensor:
    """``a . b`` summed parameter by parameter (a 0-d tensor on the parameters' device)."""
    total = torch.zeros((), dtype=a[0].dtype, device=a[0].device)
    for x, y in zip(a, b):
        total = total + (x * y).sum()
    return total


def reference_equilibrate(
    gradients: list[Gradient],
    weights: list[float],
    *,
    alpha: float,
    weight_lr: float,
    weight_steps: int,
    adjust: bool = True,
    reweight: bool = True,
    adjust_against: str = "adjusted",
    weight_gradient: str = "normalized",
) -> tuple[list[Gradient], list[float], int]:
    """Refine K per-parameter domain gradients; return the directions ``d_k``, the new
    weights and the number of adjusted ordered pairs."""
    K = len(gradients)
    num_parameters = len(gradients[0])
    # Decompose (Eqs. 2-3).
    invariant = [sum(g[p] for g in gradients) / K for p in range(num_parameters)]
    specific = [[g[p] - invariant[p] for p in range(num_parameters)] for g in gradients]
    # Adjust (Eqs. 5-6): S_i in place, against the current S_j ("adjusted") or the
    # unadjusted S_j ("original").
    adjusted = 0
    if adjust:
        original = [list(s) for s in specific]
        for i in range(K):
            for j in range(K):
                if i == j:
                    continue
                other = specific[j] if adjust_against == "adjusted" else original[j]
                inner = float(dot(specific[i], other))
                norm_i_sq = float(dot(specific[i], specific[i]))
                norm_j_sq = float(dot(other, other))
                if norm_i_sq <= 0 or norm_j_sq <= 0:
                    continue
                cosine = min(1.0, inner / (norm_i_sq * norm_j_sq) ** 0.5)  # rounding can exceed 1
                if cosine > alpha:
                    scale = inner / norm_j_sq
                    specific[i] = [s_i - scale * s_j for s_i, s_j in zip(specific[i], other)]
                    adjusted += 1
    # Reweight (Eqs. 7-8): projected gradient steps on |sum_k w_k S'_k|^2, the gradient
    # divided by sum_k |S'_k|^2 ("normalized") or as written ("literal").
    weights = [float(w) for w in weights]
    if reweight:
        total = sum(float(dot(s, s)) for s in specific) + TINY if weight_gradient == "normalized" else 1.0
        for _ in range(weight_steps):
            combined = [sum(weights[k] * specific[k][p] for k in range(K)) for p in range(num_parameters)]
            weights = [
                min(1.0, max(0.0, weights[k] - weight_lr * 2.0 * float(dot(specific[k], combined)) / total))
                for k in range(K)
            ]
    # Refine (Eq. 9).
    directions = [[g_p - weights[k] * s_p for g_p, s_p in zip(gradients[k], specific[k])] for k in range(K)]
    return directions, weights, adjusted
