"""Sharpness-aware directions: GSAM and SAGM, on flat parameter vectors.

Both methods take two gradients of the same loss on the same batch: ``g`` at the
weights ``w`` and ``g_p`` at the perturbed weights ``w + e``. A *rule* says what
``e`` is (:meth:`perturbation`, from ``g``) and which direction ``d`` the optimizer
then steps with from ``w`` (:meth:`direction`, from ``g`` and ``g_p``). Every vector
is one flat tensor over all trainable parameters, so norms and inner products are over
the whole network, as in both official codes.

Sources (the commits ``../shared/PEERS.md`` read):

* GSAM: Zhuang et al., "Surrogate Gap Guided Sharpness-Aware Minimization", ICLR 2022,
  Algorithm 1; official JAX code google-research/big_vision@0127fb6b337e:
  ``big_vision/trainers/proj/gsam/gsam.py:69-122``; the author's PyTorch
  re-implementation juntang-zhuang/GSAM@a770275b3324: ``gsam/gsam.py:41-85, 152-188``.
* SAGM: Wang et al., "Sharpness-Aware Gradient Matching for Domain Generalization",
  CVPR 2023; official code Wang-pengfei/SAGM@69d4d9d2a390: ``domainbed/sagm/sagm.py:41-69,
  145-180``, ``domainbed/algorithms/algorithms.py:115-157``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The norm's guard in ``rho g / (|g| + eps)``, as both official codes have it
#: (big_vision ``gsam.py`` ``eps=1e-12``; SAGM ``sagm.py:41-53``).
EPS = 1e-12


def ascent_step(g: torch.Tensor, rho: float) -> torch.Tensor:
    """SAM's perturbation ``rho g / (|g| + eps)``: the step of length ``rho`` (up to
    ``eps``) along the gradient, the norm taken over all parameters (big_vision
    ``gsam.py:82-83``; GSAM PyTorch ``gsam/gsam.py:42-53``)."""
    return g * (rho / (g.norm() + EPS))


def orthogonal_component(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """``g - (g . onto / |onto|^2) onto``: the part of ``g`` orthogonal to ``onto``
    (big_vision ``gsam.py:92-101``); all of ``g`` when ``onto`` is zero."""
    squared_norm = onto @ onto
    coefficient = torch.where(squared_norm > 0, (g @ onto) / squared_norm, torch.zeros_like(squared_norm))
    return g - coefficient * onto


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``u . v / (|u| |v|)``, 0 when either is zero."""
    norms = u.norm() * v.norm()
    return torch.where(norms > 0, (u @ v) / norms, torch.zeros_like(norms))


@dataclass(frozen=True)
class GSAMRule:
    """GSAM (Zhuang et al., ICLR 2022, Algorithm 1): perturb by SAM's ascent step,
    ``e = rho g / (|g| + eps)``; step with ``d = g_p - alpha g_perp``, where ``g_perp``
    is ``g``'s component orthogonal to ``g_p`` (big_vision ``gsam.py:92-105``).

    ``d . g_p = |g_p|^2``: the step descends the perturbed loss as SAM does, and its
    ``-alpha g_perp`` part descends the surrogate gap ``f(w + e) - f(w)``.
    ``alpha = 0`` is SAM (``gsam.py:67``). ``rho`` is constant: the official code's
    ``rho_t`` follows the learning rate between ``rho_min`` and ``rho_max`` and is
    ``rho_max`` when the learning rate is constant (``gsam.py:72-75``), as DomainBed's is.
    """

    rho: float
    alpha: float

    def perturbation(self, g: torch.Tensor) -> torch.Tensor:
        return ascent_step(g, self.rho)

    def direction(self, g: torch.Tensor, g_p: torch.Tensor) -> torch.Tensor:
        return g_p - self.alpha * orthogonal_component(g, g_p)


@dataclass(frozen=True)
class SAGMRule:
    """SAGM as its official code runs it (Wang et al., CVPR 2023): perturb by
    ``e = rho g / (|g| + eps) - alpha g`` (``sagm.py:41-53``; ``alpha`` multiplies the
    raw gradient, so it lives on the learning rate's scale); step with the mean
    ``d = (g + g_p) / 2`` (``gradient_decompose``, ``sagm.py:63-69``:
    ``g_p + 0.5 g - 0.5 g_p``).

    ``rho`` is used here; the released code fixes it at 0.05 with a constant
    scheduler and never reads its ``rho`` hyperparameter (``algorithms.py:138-139``).
    """

    rho: float
    alpha: float

    def perturbation(self, g: torch.Tensor) -> torch.Tensor:
        return ascent_step(g, self.rho) - self.alpha * g

    def direction(self, g: torch.Tensor, g_p: torch.Tensor) -> torch.Tensor:
        return (g + g_p) / 2
