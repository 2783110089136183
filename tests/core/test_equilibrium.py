"""equilibrate against the per-vector loop reference of Eqs. 3-9 (``core.reference``), its
properties, the readings of DESIGN 1b, and dge_net_vs_gradavg."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from domainbed_dge.core.equilibrium import equilibrate
from domainbed_dge.core.reference import reference_equilibrate


def reference(G, weights, alpha, weight_lr, weight_steps, **options):
    """``core.reference``'s per-vector loops on G's rows (each row one parameter), in float64."""
    rows = [[row] for row in G.double()]
    directions, w, adjusted = reference_equilibrate(
        rows, [float(v) for v in weights], alpha=alpha, weight_lr=weight_lr, weight_steps=weight_steps, **options
    )
    return torch.stack([d[0] for d in directions]), torch.tensor(w, dtype=torch.float64), adjusted


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
@pytest.mark.parametrize("against", ["adjusted", "original"])
@pytest.mark.parametrize("weight_gradient,weight_lr", [("normalized", 0.5), ("literal", 0.002)])
def test_matches_the_loop_reference(K, shared, steps, dtype, against, weight_gradient, weight_lr):
    # The literal step's lr keeps its weights off the clamp at [0, 1] for these |S|^2 ~ 257.
    G = correlated_gradients(K, 257, shared, seed=K * 10 + steps, dtype=dtype)
    weights = torch.rand(K, generator=torch.Generator().manual_seed(K))
    options = dict(adjust_against=against, weight_gradient=weight_gradient)
    expected, expected_weights, expected_adjusted = reference(G, weights, 0.3, weight_lr, steps, **options)
    result = equilibrate(G, weights, alpha=0.3, weight_lr=weight_lr, weight_steps=steps, **options)
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


@pytest.mark.parametrize(
    "weight_lr,weights,directions",
    [
        # grad f = 2 S S^T w = (50, -50): w = clip((1, 0) - 0.1 (50, -50)) = (0, 1).
        (0.1, [0.0, 1.0], [[-4.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),
        # A step off the clamp: w = (1, 0) - 0.001 (50, -50) = (0.95, 0.05).
        (0.001, [0.95, 0.05], [[0.75, 1.0, 1.0], [5.75, 1.0, 1.0]]),
    ],
)
def test_literal_weight_gradient_pinned_values(weight_lr, weights, directions):
    # The same G and start as test_pinned_values, whose normalised step gives (0.9, 0.1)
    # at weight_lr 0.1: the literal gradient is sum_k |S_k|^2 = 50 times larger.
    G = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
    start = torch.tensor([1.0, 0.0], dtype=torch.float64)
    result = equilibrate(G, start, weight_lr=weight_lr, weight_gradient="literal")
    torch.testing.assert_close(result.weights, torch.tensor(weights, dtype=torch.float64))
    torch.testing.assert_close(result.directions, torch.tensor(directions, dtype=torch.float64))


@pytest.mark.parametrize("exponent", [-2, 2])
def test_literal_weight_gradient_scales_with_the_gradients_squared(exponent):
    # Scaling G by c scales Eq. 8's literal gradient by c^2, so weight_lr / c^2 on c G
    # takes the same step; the normalised reading takes it at the same weight_lr.
    G = correlated_gradients(3, 50, 0.9, seed=4)
    weights = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)
    c = 10.0**exponent
    base = equilibrate(G, weights, weight_lr=1e-3, weight_gradient="literal")
    scaled = equilibrate(c * G, weights, weight_lr=1e-3 / c**2, weight_gradient="literal")
    torch.testing.assert_close(scaled.weights, base.weights)
    assert not torch.allclose(equilibrate(c * G, weights, weight_lr=1e-3, weight_gradient="literal").weights,
                              base.weights)


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


# The readings of DESIGN 1b. S = [(2, 1), (2, -1), (-4, 0)] around g_inv = (1, 1): only
# S_0 and S_1 agree (cosine 0.6 > 0.5). "adjusted": S_0 <- S_0 - 0.6 S_1 = (0.8, 1.6),
# which is then orthogonal to S_1, so S_1 stays. "original": S_1 is projected off the
# unadjusted S_0 as well, S_1' = (0.8, -1.6).
READINGS_G = torch.tensor([[3.0, 2.0], [3.0, 0.0], [-3.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    "against,pairs,directions",
    [
        ("adjusted", 1, [[2.2, 0.4], [1.0, 1.0], [1.0, 1.0]]),
        ("original", 2, [[2.2, 0.4], [2.2, 1.6], [1.0, 1.0]]),
    ],
)
def test_adjust_against_pinned_values(against, pairs, directions):
    result = equilibrate(READINGS_G, torch.ones(3, dtype=torch.float64), reweight=False, adjust_against=against)
    assert result.adjusted_pairs == pairs
    torch.testing.assert_close(result.directions, torch.tensor(directions, dtype=torch.float64))


def test_adjust_against_rejects_unknown_readings():
    with pytest.raises(ValueError, match="'current'.*adjusted, original"):
        equilibrate(READINGS_G, torch.ones(3), adjust_against="current")


def test_net_vs_gradavg_pinned_value():
    # r = S_0' + S_1 + S_2 = (-1.2, 0.6); |r| / |3 g_inv| = sqrt(1.8) / (3 sqrt(2)).
    result = equilibrate(READINGS_G, torch.ones(3, dtype=torch.float64), reweight=False)
    assert result.net_vs_gradavg == pytest.approx(1.8**0.5 / (3 * 2**0.5), rel=1e-12)
    assert equilibrate(READINGS_G, torch.ones(3), adjust=False).net_vs_gradavg == pytest.approx(0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(G=gradient_matrices, steps=st.integers(0, 3), against=st.sampled_from(["adjusted", "original"]))
def test_net_vs_gradavg_is_what_k_sgd_steps_add_to_gradavg_times_k(G, steps, against):
    # K plain-SGD steps of the directions move theta by sum_k d_k = K g_inv - r.
    K = G.shape[0]
    weights = torch.rand(K, generator=torch.Generator().manual_seed(K), dtype=torch.float64)
    result = equilibrate(G, weights, alpha=0.2, weight_steps=steps, adjust_against=against)
    k_gradavg = K * G.mean(dim=0)
    if k_gradavg.norm() > 1e-9:
        expected = float((result.directions.sum(dim=0) - k_gradavg).norm() / k_gradavg.norm())
        # From the K x K statistics, |r| carries a rounding floor of about 1e-8 |S| (a square root).
        assert result.net_vs_gradavg == pytest.approx(expected, rel=1e-6, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(G=gradient_matrices.filter(lambda G: G.shape[0] == 2), alpha=st.floats(0, 1))
def test_two_domains_never_adjust_and_keep_unit_weights(G, alpha):
    # S_1 = -S_2 (DESIGN 1b): no pair's cosine exceeds alpha >= 0, and w = 1 is stationary.
    result = equilibrate(G, torch.ones(2, dtype=torch.float64), alpha=alpha, weight_steps=3)
    assert result.adjusted_pairs == 0
    torch.testing.assert_close(result.weights, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(result.directions, G.mean(dim=0).expand(2, -1))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"weights": torch.ones(2)}, "weights (2,) is not allowed; allowed: shape (3,), one weight per domain"),
        ({"alpha": 1.5}, "alpha 1.5 is not allowed; allowed: a number in [0, 1]"),
        ({"weight_lr": -0.1}, "weight_lr -0.1 is not allowed; allowed: a number > 0"),
        ({"weight_steps": -1}, "weight_steps -1 is not allowed; allowed: an integer >= 0"),
        ({"weight_steps": 1.0}, "weight_steps 1.0 is not allowed; allowed: an integer >= 0"),
        ({"weight_gradient": "scaled"}, "weight_gradient 'scaled' is not allowed; allowed: normalized, literal"),
    ],
)
def test_bad_options_are_refused_naming_the_value_and_what_is_allowed(options, message):
    weights = options.pop("weights", torch.ones(3))
    with pytest.raises(ValueError) as error:
        equilibrate(READINGS_G, weights, **options)
    assert str(error.value) == message


def test_adjust_against_is_checked_even_with_adjustment_off():
    with pytest.raises(ValueError, match="'current'"):
        equilibrate(READINGS_G, torch.ones(3), adjust=False, adjust_against="current")
