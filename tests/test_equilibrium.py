"""equilibrate against a literal per-vector reading of Eqs. 3-9, and its properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from domainbed_dge.equilibrium import equilibrate


def literal_equilibrium(G, weights, alpha, weight_lr, weight_steps, adjust=True, reweight=True):
    """DESIGN section 1, steps 3-6, one vector at a time, in float64."""
    G = G.double()
    K = G.shape[0]
    g_inv = sum(G[k] for k in range(K)) / K
    S = [G[k] - g_inv for k in range(K)]
    adjusted = 0
    if adjust:
        for i in range(K):
            for j in range(K):
                if j == i:
                    continue
                norms = S[i].norm() * S[j].norm()
                if norms > 0 and (S[i] @ S[j]) / norms > alpha:
                    S[i] = S[i] - (S[i] @ S[j]) / (S[j] @ S[j]) * S[j]
                    adjusted += 1
    w = [float(v) for v in weights]
    if reweight:
        total = sum(float(s @ s) for s in S) + torch.finfo(torch.float64).tiny
        for _ in range(weight_steps):
            combined = sum(w[k] * S[k] for k in range(K))
            w = [min(1.0, max(0.0, w[k] - weight_lr * 2 * float(S[k] @ combined) / total)) for k in range(K)]
    directions = torch.stack([G[k] - w[k] * S[k] for k in range(K)])
    return directions, torch.tensor(w, dtype=torch.float64), adjusted


def correlated_gradients(K, P, shared, seed, dtype=torch.float64):
    """Domain gradients = a common part + specific parts. The specific parts of the
    even and of the odd domains share a direction with weight ``shared`` in [0, 1], so
    for K >= 3 adjustment triggers (``shared`` high) or not (``shared`` = 0)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(P, generator=generator, dtype=torch.float64)
    specific_common = torch.randn(P, generator=generator, dtype=torch.float64)
    rows = [
        common
        + shared * (1 if k % 2 == 0 else -1) * specific_common
        + (1 - shared) * torch.randn(P, generator=generator, dtype=torch.float64)
        for k in range(K)
    ]
    return torch.stack(rows).to(dtype)


CASES = [(K, shared, steps) for K in (2, 3, 4, 5) for shared in (0.0, 0.9) for steps in (1, 3)]


@pytest.mark.parametrize("K,shared,steps", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_literal_implementation(K, shared, steps, dtype):
    G = correlated_gradients(K, 257, shared, seed=K * 10 + steps, dtype=dtype)
    weights = torch.rand(K, generator=torch.Generator().manual_seed(K))
    expected, expected_weights, expected_adjusted = literal_equilibrium(G, weights, 0.3, 0.5, steps)
    result = equilibrate(G, weights, alpha=0.3, weight_lr=0.5, weight_steps=steps)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    assert result.directions.dtype == dtype and result.weights.dtype == dtype
    torch.testing.assert_close(result.directions.double(), expected, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(result.weights.double(), expected_weights, rtol=tolerance, atol=tolerance)
    assert result.adjusted_pairs == expected_adjusted


def test_cases_cover_adjustment_on_and_off():
    counts = {
        shared: equilibrate(correlated_gradients(3, 257, shared, seed=1), torch.ones(3), alpha=0.3).adjusted_pairs
        for shared in (0.0, 0.9)
    }
    assert counts[0.0] == 0 and counts[0.9] > 0


@pytest.mark.parametrize("reweight", [True, False])
def test_adjustment_off_gives_the_mean_everywhere(reweight):
    G = correlated_gradients(4, 100, 0.9, seed=3)
    result = equilibrate(G, torch.ones(4), adjust=False, reweight=reweight)
    torch.testing.assert_close(result.directions, G.mean(dim=0).expand(4, -1))
    torch.testing.assert_close(result.weights, torch.ones(4, dtype=G.dtype))


def test_pinned_values():
    G = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
    # S = [[-5, 0, 0], [5, 0, 0]]: cos = -1, nothing adjusted; f's gradient at w = 1 is
    # 2 S S^T w / 50 = 0, so the weights stay 1 and every direction is the mean.
    result = equilibrate(G, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(result.directions, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64))
    # From w = (1, 0): grad f = 2 (25, -25) / 50 = (1, -1), so w = clip((0.9, 0.1)).
    result = equilibrate(G, torch.tensor([1.0, 0.0], dtype=torch.float64), weight_lr=0.1)
    torch.testing.assert_close(result.weights, torch.tensor([0.9, 0.1], dtype=torch.float64))
    torch.testing.assert_close(
        result.directions, torch.tensor([[0.5, 1.0, 1.0], [5.5, 1.0, 1.0]], dtype=torch.float64)
    )


gradient_matrices = st.builds(
    lambda K, P, shared, seed: correlated_gradients(K, P, shared, seed),
    st.integers(2, 5),
    st.integers(1, 40),
    st.sampled_from([0.0, 0.5, 0.95]),
    st.integers(0, 10_000),
)


@settings(max_examples=60, deadline=None)
@given(G=gradient_matrices, steps=st.integers(0, 4), start=st.floats(0, 1))
def test_weights_stay_in_unit_interval(G, steps, start):
    weights = torch.full((G.shape[0],), start, dtype=torch.float64)
    result = equilibrate(G, weights, alpha=0.2, weight_lr=5.0, weight_steps=steps)
    assert ((result.weights >= 0) & (result.weights <= 1)).all()
    assert torch.isfinite(result.directions).all()


@settings(max_examples=40, deadline=None)
@given(G=gradient_matrices, exponent=st.sampled_from([-20, -3, 3, 20]))
def test_scale_of_G_only_scales_the_directions(G, exponent):
    weights = torch.rand(G.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = equilibrate(G, weights, alpha=0.3, weight_lr=0.7, weight_steps=2)
    scaled = equilibrate(G * 10.0**exponent, weights, alpha=0.3, weight_lr=0.7, weight_steps=2)
    torch.testing.assert_close(scaled.weights, base.weights)
    torch.testing.assert_close(scaled.directions / 10.0**exponent, base.directions)
    assert scaled.adjusted_pairs == base.adjusted_pairs


@settings(max_examples=40, deadline=None)
@given(G=gradient_matrices, seed=st.integers(0, 1000))
def test_permuting_rows_permutes_the_result(G, seed):
    # Adjustment visits pairs in index order, so permutation invariance holds exactly
    # when no pair is adjusted (alpha = 1) and is checked there.
    K = G.shape[0]
    permutation = torch.randperm(K, generator=torch.Generator().manual_seed(seed))
    weights = torch.rand(K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    base = equilibrate(G, weights, alpha=1.0, weight_lr=0.4, weight_steps=2)
    permuted = equilibrate(G[permutation], weights[permutation], alpha=1.0, weight_lr=0.4, weight_steps=2)
    torch.testing.assert_close(permuted.directions, base.directions[permutation])
    torch.testing.assert_close(permuted.weights, base.weights[permutation])


def test_weights_of_zero_give_the_raw_gradients():
    G = correlated_gradients(3, 50, 0.5, seed=4)
    result = equilibrate(G, torch.zeros(3, dtype=torch.float64), reweight=False)
    torch.testing.assert_close(result.directions, G)


@pytest.mark.parametrize(
    "G",
    [
        torch.zeros(3, 8),
        torch.ones(3, 8),
        torch.stack([torch.ones(8), 1e-30 * torch.ones(8), -torch.ones(8)]),
        torch.stack([torch.linspace(-1, 1, 8), 1e30 * torch.linspace(1, -1, 8), torch.ones(8)]),
    ],
    ids=["zero rows", "identical rows", "rows 1e-30 apart in scale", "rows 1e30 apart in scale"],
)
def test_degenerate_matrices_give_finite_results(G):
    result = equilibrate(G, torch.ones(3), weight_steps=3)
    assert torch.isfinite(result.directions).all()
    assert ((result.weights >= 0) & (result.weights <= 1)).all()


def test_results_stay_on_the_device_and_dtype_of_G():
    G = correlated_gradients(3, 20, 0.5, seed=5, dtype=torch.float32)
    result = equilibrate(G, torch.ones(3, dtype=torch.float64))
    assert result.directions.shape == G.shape
    assert result.directions.device == G.device and result.weights.device == G.device
    assert result.weights.dtype == torch.float32


@pytest.mark.cuda
def test_cuda_matches_cpu():
    G = correlated_gradients(3, 1000, 0.9, seed=6, dtype=torch.float32)
    cpu = equilibrate(G, torch.ones(3))
    cuda = equilibrate(G.cuda(), torch.ones(3, device="cuda"))
    assert cuda.directions.is_cuda
    torch.testing.assert_close(cuda.directions.cpu(), cpu.directions, rtol=1e-5, atol=1e-5)
