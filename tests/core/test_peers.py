"""Pinned values and properties of the peer methods (GradAvg, Agr-Sum, Agr-Rand, PCGrad)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from domainbed_dge.core import peers

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def literal_pcgrad(G, orders):
    """Yu et al. (2020), Alg. 1, one vector at a time, with the given orders over j."""
    projected = []
    for i, order in enumerate(orders):
        g = G[i].clone()
        for j in order:
            if g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        projected.append(g)
    return torch.stack(projected).sum(dim=0)


def test_pinned_values_on_J():
    torch.testing.assert_close(peers.grad_avg(J), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(peers.agr_sum(J), torch.tensor([0.0, 2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(
        peers.pcgrad(J), torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        peers.pcgrad(J, reduction="mean"), torch.tensor([0.2924, 1.9006, 1.9006], dtype=torch.float64), atol=1e-4, rtol=0
    )
    rand = peers.agr_rand(J, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rand[1:], torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert rand[0] != 0


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_matches_literal_algorithm(seed):
    G = torch.randn(4, 30, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    fixed_orders = [[j for j in range(4) if j != i] for i in range(4)]
    torch.testing.assert_close(peers.pcgrad(G, order="fixed"), literal_pcgrad(G, fixed_orders))
    # The random order draws one permutation of j != i per i, in turn.
    generator = torch.Generator().manual_seed(seed)
    random_orders = [[others[t] for t in torch.randperm(3, generator=generator).tolist()] for others in fixed_orders]
    torch.testing.assert_close(
        peers.pcgrad(G, order="random", generator=torch.Generator().manual_seed(seed)), literal_pcgrad(G, random_orders)
    )


def test_pcgrad_mixing_counts_conflicts():
    _, conflicts = peers.pcgrad_mixing(J @ J.T, order="fixed")
    assert conflicts == 2


def test_agr_rand_noise_is_scaled_gaussian_on_conflicts_only():
    generator = torch.Generator().manual_seed(1)
    P = 20_000
    agree = torch.rand(2, P // 2, generator=generator) + 0.5  # both positive
    conflict = torch.stack([torch.ones(P // 2), -torch.ones(P // 2)])
    G = torch.cat([agree, conflict], dim=1)
    direction = peers.agr_rand(G, generator=generator)
    torch.testing.assert_close(direction[: P // 2], agree.sum(dim=0))
    scale = agree.sum(dim=0).abs().mean()
    noise = direction[P // 2 :] / scale
    assert abs(float(noise.mean())) < 0.05
    assert abs(float(noise.std()) - 1.0) < 0.05


def test_agr_rand_when_nothing_agrees_gives_zero():
    G = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 2.0, -3.0]])
    assert torch.equal(peers.agr_sum(G), torch.zeros(3))
    assert torch.equal(peers.agr_rand(G, generator=torch.Generator().manual_seed(0)), torch.zeros(3))


def test_coordinate_zero_everywhere_gets_no_noise_and_no_conflict():
    G = torch.tensor([[0.0, 1.0, 1.0], [0.0, 2.0, -1.0]])
    agree, conflict = peers.agreement_mask(G)
    assert agree.tolist() == [False, True, False]
    assert conflict.tolist() == [False, False, True]
    direction = peers.agr_rand(G, generator=torch.Generator().manual_seed(0))
    assert direction[0] == 0 and direction[1] == 3 and direction[2] != 0


matrices = st.builds(
    lambda K, P, seed: torch.randn(K, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64),
    st.integers(1, 5),
    st.integers(1, 30),
    st.integers(0, 10_000),
)
DETERMINISTIC = {
    "grad_avg": peers.grad_avg,
    "agr_sum": peers.agr_sum,
    "pcgrad_fixed": lambda G: peers.pcgrad(G, order="fixed"),
}


@settings(max_examples=40, deadline=None)
@given(G=matrices, scale=st.sampled_from([1e-20, 1e-3, 7.0, 1e20]))
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_shape_finiteness_and_scaling(name, G, scale):
    combine = DETERMINISTIC[name]
    direction = combine(G)
    assert direction.shape == (G.shape[1],) and torch.isfinite(direction).all()
    torch.testing.assert_close(combine(G * scale) / scale, direction)


@settings(max_examples=40, deadline=None)
@given(G=matrices, seed=st.integers(0, 100))
@pytest.mark.parametrize("name", ["grad_avg", "agr_sum"])
def test_row_permutation_invariance(name, G, seed):
    permutation = torch.randperm(G.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(DETERMINISTIC[name](G[permutation]), DETERMINISTIC[name](G))


@settings(max_examples=30, deadline=None)
@given(row=st.lists(st.floats(-10, 10).filter(lambda v: abs(v) > 1e-3), min_size=1, max_size=10), K=st.integers(1, 4))
def test_identical_rows_give_the_plain_gradient(row, K):
    g = torch.tensor(row, dtype=torch.float64)
    G = g.expand(K, -1).clone()
    torch.testing.assert_close(peers.grad_avg(G), g)
    torch.testing.assert_close(peers.agr_sum(G), K * g)
    torch.testing.assert_close(peers.agr_rand(G), K * g)
    torch.testing.assert_close(peers.pcgrad(G), K * g)
    torch.testing.assert_close(peers.pcgrad(G, reduction="mean"), g)
