"""The K x K statistics every gradient combiner here works from.

A combiner that is linear in the rows of the gradient matrix ``G`` (K x P) only needs
inner products between those rows. They are gathered in one pass over ``G``, in
float64, from the centred rows ``S = G - 1 g_inv^T`` (DGE paper, Eq. 3) and the mean
``g_inv`` itself, so that the Gram of ``S`` is never formed by cancelling the Gram of
``G`` (which loses everything in float32 when the domain gradients nearly agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Columns of G converted to float64 at a time: bounds the temporary to a few MiB.
CHUNK_COLUMNS = 1 << 18


def gram_statistics(G: torch.Tensor) -> torch.Tensor:
    """Return the (K+1) x (K+1) float64 Gram of ``[S; g_inv]`` on ``G``'s device.

    ``S = G - mean_k g_k`` are the domain-specific gradients (Eq. 3) and the last row
    is the domain-invariant gradient ``g_inv`` (Eq. 2). Nothing is copied to the host.
    """
    if G.dim() != 2 or G.shape[0] < 1:
        raise ValueError(f"G must be a K x P matrix with K >= 1, got shape {tuple(G.shape)}")
    K = G.shape[0]
    gram = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=G.device)
    rows = torch.empty(K + 1, min(CHUNK_COLUMNS, G.shape[1]), dtype=torch.float64, device=G.device)
    for columns in G.split(CHUNK_COLUMNS, dim=1):
        chunk = rows[:, : columns.shape[1]]
        chunk[:K] = columns
        torch.mean(chunk[:K], dim=0, out=chunk[K])
        chunk[:K] -= chunk[K]
        gram.addmm_(chunk, chunk.T)
    return gram


@dataclass(frozen=True)
class GradientGram:
    """Inner products of the domain gradients, as float64 tensors on the host.

    ``specific`` is ``S S^T`` (K x K), ``specific_mean`` is ``S g_inv`` (K) and
    ``mean_sq`` is ``|g_inv|^2``.
    """

    specific: torch.Tensor
    specific_mean: torch.Tensor
    mean_sq: torch.Tensor

    @classmethod
    def from_statistics(cls, statistics: torch.Tensor) -> "GradientGram":
        """Split the output of :func:`gram_statistics` (moved to the host)."""
        statistics = statistics.to("cpu", torch.float64)
        return cls(statistics[:-1, :-1], statistics[:-1, -1], statistics[-1, -1])

    @classmethod
    def of(cls, G: torch.Tensor) -> "GradientGram":
        return cls.from_statistics(gram_statistics(G))

    @property
    def num_domains(self) -> int:
        return self.specific.shape[0]

    @property
    def full(self) -> torch.Tensor:
        """``G G^T``, rebuilt without cancellation from ``G = S + 1 g_inv^T``."""
        cross = self.specific_mean.unsqueeze(1)
        return self.specific + cross + cross.T + self.mean_sq

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.specific.diagonal()).all() and torch.isfinite(self.mean_sq))

    def norm_of_combination(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``|c^T G|`` for a K-vector ``c``, from the statistics alone."""
        total = coefficients.sum()
        square = (
            coefficients @ self.specific @ coefficients
            + 2 * total * (coefficients @ self.specific_mean)
            + total**2 * self.mean_sq
        )
        return square.clamp(min=0).sqrt()

    def mean_pairwise_cosine(self) -> float:
        """Mean cosine over the K(K-1)/2 pairs of raw domain gradients (0 when K = 1)."""
        return _mean_off_diagonal(_cosines(self.full))


def _cosines(gram: torch.Tensor) -> torch.Tensor:
    norms = gram.diagonal().clamp(min=0).sqrt()
    scale = torch.outer(norms, norms)
    return torch.where(scale > 0, gram / torch.where(scale > 0, scale, 1.0), 0.0)


def _mean_off_diagonal(matrix: torch.Tensor) -> float:
    K = matrix.shape[0]
    if K < 2:
        return 0.0
    return float((matrix.sum() - matrix.diagonal().sum()) / (K * (K - 1)))
