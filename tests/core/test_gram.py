"""The K x K statistics: against direct products, without cancellation, and the
cosine diagnostic on pinned matrices."""

from __future__ import annotations

import pytest
import torch

from domainbed_dge.core import gram as gram_module
from domainbed_dge.core.gram import (
    GradientGram,
    chunked_gram_statistics,
    fused_gram_terms,
    fused_pass_applies,
    gram_statistics,
)

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def test_statistics_are_the_gram_of_the_centred_rows_and_the_mean():
    G = torch.randn(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean = G.mean(dim=0)
    rows = torch.cat([G - mean, mean.unsqueeze(0)])
    torch.testing.assert_close(gram_statistics(G), rows @ rows.T)
    gram = GradientGram.of(G)
    torch.testing.assert_close(gram.full, G @ G.T)
    assert gram.num_domains == 4 and float(gram.mean_sq) == pytest.approx(float(mean @ mean))


def test_chunks_give_the_same_statistics(monkeypatch):
    G = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1))
    whole = gram_statistics(G)
    monkeypatch.setattr(gram_module, "CHUNK_COLUMNS", 7)
    torch.testing.assert_close(gram_statistics(G), whole)


def test_nearly_equal_float32_rows_keep_their_differences():
    # Rows 1e-4 apart: G G^T - centring in float32 would lose S S^T entirely.
    base = torch.randn(10_000, generator=torch.Generator().manual_seed(2))
    G = torch.stack([base, base + 1e-4 * torch.randn(10_000, generator=torch.Generator().manual_seed(3))])
    exact = GradientGram.of(G.double())
    torch.testing.assert_close(GradientGram.of(G).specific, exact.specific, rtol=1e-3, atol=0)


def nearly_equal_rows(columns: int, difference: float, device: str = "cpu") -> torch.Tensor:
    """Two float32 rows ``difference`` apart relative to their size."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(columns, generator=generator)
    return torch.stack([base, base + difference * torch.randn(columns, generator=generator)]).to(device)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_rows_agreeing_to_1e_6_over_2_to_the_24_columns_keep_their_differences(device):
    # Closed form for K = 2: S = +-(g0 - g1) / 2, so S S^T = |d|^2 / 4 [[1, -1], [-1, 1]] and
    # S_0 . g_inv = d . (g0 + g1) / 4, with d = g0 - g1 exact in float64.
    G = nearly_equal_rows(1 << 24, 1e-6, device)
    g0, g1 = G.double()
    d = g0 - g1
    quarter = float(d @ d) / 4
    gram = GradientGram.of(G)
    expected = torch.tensor([[quarter, -quarter], [-quarter, quarter]], dtype=torch.float64)
    torch.testing.assert_close(gram.specific, expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(gram.specific_mean[0], (d @ (g0 + g1)).cpu() / 4, rtol=1e-9, atol=0)
    torch.testing.assert_close(gram.mean_sq, ((g0 + g1) @ (g0 + g1)).cpu() / 4, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rows", [
    torch.randn(3, 1000, generator=torch.Generator().manual_seed(6)),
    nearly_equal_rows(10_000, 1e-6),
    torch.zeros(1, 5),
])
def test_fused_terms_give_the_chunked_pass_statistics(rows, monkeypatch):
    monkeypatch.setattr(gram_module, "CHUNK_COLUMNS", 64)
    torch.testing.assert_close(fused_gram_terms(rows), chunked_gram_statistics(rows), rtol=1e-12, atol=1e-300)


def test_the_cpu_uses_the_eager_pass():
    assert not fused_pass_applies(torch.device("cpu"))
    assert not fused_pass_applies(torch.device("meta"))


@pytest.mark.cuda
def test_compiled_pass_on_cuda_gives_the_eager_statistics():
    G = torch.randn(3, 3_000_000, generator=torch.Generator().manual_seed(7)).cuda()
    assert fused_pass_applies(G.device)
    torch.testing.assert_close(gram_statistics(G), chunked_gram_statistics(G), rtol=1e-12, atol=0)
    assert not gram_module._FUSED_FAILED


def test_norm_of_combination_matches_the_combined_vector():
    G = torch.randn(3, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    c = torch.tensor([0.2, -1.0, 3.0], dtype=torch.float64)
    assert float(GradientGram.of(G).norm_of_combination(c)) == pytest.approx(float((c @ G).norm()))


def test_mean_pairwise_cosine_pinned_values():
    # g0 . g1 = -22, |g0| = sqrt(18), |g1| = sqrt(38).
    assert GradientGram.of(J).mean_pairwise_cosine() == pytest.approx(-22 / (18 * 38) ** 0.5)
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert GradientGram.of(orthogonal).mean_pairwise_cosine() == pytest.approx(1 / 3)
    assert GradientGram.of(J[:1]).mean_pairwise_cosine() == 0.0


def test_zero_rows_have_zero_cosine_and_finite_statistics():
    gram = GradientGram.of(torch.zeros(3, 5))
    assert gram.is_finite() and gram.mean_pairwise_cosine() == 0.0
    assert not GradientGram.of(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])).is_finite()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="K x P"):
        gram_statistics(torch.zeros(5))
