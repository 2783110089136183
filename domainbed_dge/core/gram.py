"""The K x K statistics every gradient combiner here works from.

A combiner that is linear in the rows of the gradient matrix ``G`` (K x P) only needs
inner products between those rows. They are gathered in one pass over ``G``, in
float64, from the centred rows ``S = G - 1 g_inv^T`` (DGE paper, Eq. 3) and the mean
``g_inv`` itself, so that the Gram of ``S`` is never formed by cancelling the Gram of
``G`` (which loses everything in float32 when the domain gradients nearly agree).

Two passes compute the same float64 quantities. On CUDA, where the eager pass's cost
is kernel launches (90 chunks of 4 operations for ResNet-50: 6.2 ms on an H200,
``reports/performance.md``) rather than the 0.1 ms it takes to read ``G``, the pass is
:func:`fused_gram_terms` compiled by ``torch.compile``, written so that Inductor makes
it one reduction that reads ``G`` once (its C++ code for the CPU is one loop over the
columns; its GPU code is still to be checked on a device). Everywhere else, and on
CUDA when the compiler is missing or fails, it is the eager chunked pass
(:func:`chunked_gram_statistics`). On the CPU the compiled pass was 5x faster, but
compiling took over a minute: every run's first step, and the test suite, would pay it.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass

import torch

#: Columns of G converted to float64 at a time by the eager pass: bounds the temporary
#: to a few MiB (2^18 was the fastest on the CPU, ``../shared/PERFORMANCE.md`` section 4).
CHUNK_COLUMNS = 1 << 18


def gram_statistics(G: torch.Tensor) -> torch.Tensor:
    """Return the (K+1) x (K+1) float64 Gram of ``[S; g_inv]`` on ``G``'s device.

    ``S = G - mean_k g_k`` are the domain-specific gradients (Eq. 3) and the last row
    is the domain-invariant gradient ``g_inv`` (Eq. 2). Nothing is copied to the host.
    The fused pass runs where :func:`fused_pass_applies`; if compiling it fails, a
    warning says so and the eager pass is used from then on.
    """
    _check_shape(G)
    if fused_pass_applies(G.device):
        try:
            return _compiled_fused_gram()(G)
        except Exception as error:  # any compiler failure: the eager pass gives the same numbers
            _FUSED_FAILED.append(error)
            warnings.warn(f"gram_statistics: the compiled pass failed ({type(error).__name__}: {error}); "
                          "using the eager chunked pass from now on", RuntimeWarning, stacklevel=2)
    return chunked_gram_statistics(G)


#: Errors of the compiled pass in this process (after the first, it is not tried again).
_FUSED_FAILED: list[Exception] = []


def fused_pass_applies(device: torch.device) -> bool:
    """Whether :func:`gram_statistics` compiles its pass for ``device``: on CUDA, with
    Triton importable (Inductor's GPU code generator), until compiling has failed once."""
    return device.type == "cuda" and not _FUSED_FAILED and importlib.util.find_spec("triton") is not None


@functools.cache
def _compiled_fused_gram():
    # One compilation per (K, P): both are fixed during a run.
    return torch.compile(fused_gram_terms, dynamic=False, fullgraph=True)


def fused_gram_terms(G: torch.Tensor) -> torch.Tensor:
    """The statistics as (K+1)(K+2)/2 sums over columns of float64 products.

    Each row is converted to float64 (exact), the mean and the centred rows are formed
    in float64 as in the eager pass, and every product of two of the K+1 rows is summed
    over the P columns. Written as separate sums with the same reduction length, so
    that Inductor fuses them into one reduction that loads each element of ``G`` once
    and keeps the float64 values in registers; run eagerly, it gives the same numbers
    as :func:`chunked_gram_statistics` up to float64 rounding.
    """
    K = G.shape[0]
    rows = [row.to(torch.float64) for row in G.unbind()]
    mean = functools.reduce(torch.add, rows) / K
    centred = [row - mean for row in rows] + [mean]
    sums = {(i, j): (centred[i] * centred[j]).sum() for i in range(K + 1) for j in range(i, K + 1)}
    return torch.stack([sums[min(i, j), max(i, j)] for i in range(K + 1) for j in range(K + 1)]).view(K + 1, K + 1)


def chunked_gram_statistics(G: torch.Tensor) -> torch.Tensor:
    """The eager pass: :data:`CHUNK_COLUMNS` columns at a time, converted to float64,
    centred in place, and accumulated with one matrix product per chunk."""
    _check_shape(G)
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


def _check_shape(G: torch.Tensor) -> None:
    if G.dim() != 2 or G.shape[0] < 1:
        raise ValueError(f"G must be a K x P matrix with K >= 1, got shape {tuple(G.shape)}")


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
