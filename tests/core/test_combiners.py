"""Combiners: the Plan contract, each method's diagnostics on pinned matrices, the
applied direction's norm, and DGE's weight readings."""

from __future__ import annotations

import pytest
import torch

from domainbed_dge.core.combiners import (
    AgreementCombiner,
    EquilibriumCombiner,
    GradAvgCombiner,
    PCGradCombiner,
    Plan,
    direction_norm_ratio,
)
from domainbed_dge.core.gram import GradientGram

# g0 . g1 = -22 < 0: PCGrad projects both ordered pairs; only coordinate 0 disagrees in sign.
J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
DGE_OPTIONS = dict(alpha=0.5, weight_lr=0.1, weight_steps=1, adjust=True, reweight=True, adjust_against="adjusted")


def plan_of(combiner, G, state=None):
    prepared = combiner.prepare(G)
    fetched = {name: tensor.double() for name, tensor in prepared.fetch.items()}
    return combiner.plan(GradientGram.of(G), state or {}, fetched, prepared)


def test_a_plan_sets_exactly_one_of_mixing_and_direction():
    with pytest.raises(ValueError, match="exactly one"):
        Plan({})
    with pytest.raises(ValueError, match="exactly one"):
        Plan({}, mixing=torch.ones(1, 2), direction=torch.ones(3), direction_norm=1.0)
    with pytest.raises(ValueError, match="direction_norm"):
        Plan({}, direction=torch.ones(3))


def test_pair_conflict_fraction_of_pcgrad():
    assert plan_of(PCGradCombiner("fixed", "sum"), J).diagnostics == {"pair_conflict_fraction": 1.0}
    agreeing = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    assert plan_of(PCGradCombiner("fixed", "sum"), agreeing).diagnostics == {"pair_conflict_fraction": 0.0}


@pytest.mark.parametrize("noise", [False, True])
def test_coordinate_conflict_fraction_of_agreement(noise):
    plan = plan_of(AgreementCombiner(noise=noise), J)
    assert plan.diagnostics == {"coordinate_conflict_fraction": pytest.approx(1 / 3)}
    assert plan.direction_norm == pytest.approx(float(plan.direction.norm()))


def test_direction_norm_ratio_pinned_values():
    gram = GradientGram.of(J)  # mean gradient (1, 1, 1), norm sqrt(3)
    assert direction_norm_ratio(plan_of(GradAvgCombiner(), J), gram) == pytest.approx(1.0)
    # Agr-Sum keeps (0, 2, 2): norm sqrt(8).
    assert direction_norm_ratio(plan_of(AgreementCombiner(noise=False), J), gram) == pytest.approx((8 / 3) ** 0.5)
    # PCGrad (hand-checked in DESIGN): (0.5848, 3.8012, 3.8012).
    expected = float(torch.tensor([0.5848, 3.8012, 3.8012]).norm()) / 3**0.5
    assert direction_norm_ratio(plan_of(PCGradCombiner("fixed", "sum"), J), gram) == pytest.approx(expected, rel=1e-4)
    assert direction_norm_ratio(plan_of(GradAvgCombiner(), torch.zeros(2, 3)), GradientGram.of(torch.zeros(2, 3))) == 0.0


def test_equilibrium_declares_its_state_and_logs_its_diagnostics():
    combiner = EquilibriumCombiner(weights="persistent", update="sequential", **DGE_OPTIONS)
    state = combiner.initial_state(3)
    assert list(state) == ["equilibrium_weights"] and torch.equal(state["equilibrium_weights"], torch.ones(3))
    G = torch.tensor([[3.0, 2.0], [3.0, 0.0], [-3.0, 1.0]], dtype=torch.float64)
    plan = plan_of(combiner, G, {"equilibrium_weights": torch.ones(3, dtype=torch.float64)})
    assert plan.mixing.shape == (3, 3) and plan.diagnostics["dge_adjusted_pairs"] == 1.0
    assert plan.diagnostics["pair_conflict_fraction"] == pytest.approx(1 / 6)
    assert {"dge_weight_0", "dge_weight_1", "dge_weight_2", "dge_net_vs_gradavg"} <= set(plan.diagnostics)
    assert set(plan.state) == {"equilibrium_weights"}
    mean = EquilibriumCombiner(weights="persistent", update="mean", **DGE_OPTIONS)
    assert plan_of(mean, G, {"equilibrium_weights": torch.ones(3, dtype=torch.float64)}).mixing.shape == (1, 3)


def test_reset_weights_start_every_iteration_from_one():
    G = torch.randn(3, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    decayed = {"equilibrium_weights": torch.full((3,), 0.2, dtype=torch.float64)}
    fresh = {"equilibrium_weights": torch.ones(3, dtype=torch.float64)}
    reset = EquilibriumCombiner(weights="reset", update="sequential", **DGE_OPTIONS)
    persistent = EquilibriumCombiner(weights="persistent", update="sequential", **DGE_OPTIONS)
    torch.testing.assert_close(plan_of(reset, G, decayed).state, plan_of(persistent, G, fresh).state)
    assert not torch.allclose(plan_of(persistent, G, decayed).state["equilibrium_weights"],
                              plan_of(persistent, G, fresh).state["equilibrium_weights"])


def test_combiners_refuse_options_they_do_not_have():
    with pytest.raises(ValueError, match="weights 'sometimes' is not allowed; allowed: persistent, reset"):
        EquilibriumCombiner(weights="sometimes", update="sequential", **DGE_OPTIONS)
    with pytest.raises(ValueError, match="update 'both' is not allowed; allowed: sequential, mean"):
        EquilibriumCombiner(weights="reset", update="both", **DGE_OPTIONS)
    with pytest.raises(ValueError, match="PCGrad order 'sorted' is not allowed; allowed: random, fixed"):
        PCGradCombiner("sorted", "sum")
    with pytest.raises(ValueError, match="PCGrad reduction 'max' is not allowed; allowed: sum, mean"):
        PCGradCombiner("fixed", "max")
