"""The DomainBed algorithms in-process: each update equals its math, skips bad steps,
and round-trips through checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

from conftest import assert_skipped_and_unchanged

pytestmark = pytest.mark.domainbed

INPUT_SHAPE = (3, 28, 28)
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def host():
    from domainbed import algorithms, hparams_registry

    return algorithms, hparams_registry


def make(host, name, num_domains, **overrides):
    algorithms, hparams_registry = host
    hparams = hparams_registry.default_hparams(name, "Debug28")
    hparams.update({"dge_optimizer": "sgd", "dge_momentum": 0.0, "lr": 0.1, **overrides})
    torch.manual_seed(0)
    return algorithms.get_algorithm_class(name)(INPUT_SHAPE, NUM_CLASSES, num_domains, hparams)


def minibatches(count, seed=0, batch=6):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, *INPUT_SHAPE, generator=generator), torch.randint(0, NUM_CLASSES, (batch,), generator=generator))
        for _ in range(count)
    ]


def domain_gradients(algorithm, batches):
    rows = []
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(algorithm.predict(x), y)
        grads = torch.autograd.grad(loss, algorithm.trainable)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def flat_parameters(algorithm):
    return torch.cat([p.detach().reshape(-1) for p in algorithm.trainable])


def expected_directions(name, G, **options):
    from domainbed_dge.core import peers
    from domainbed_dge.core.equilibrium import equilibrate

    if name == "DGE":
        directions = equilibrate(G, torch.ones(G.shape[0])).directions
        return directions if options.get("dge_update", "sequential") == "sequential" else directions.mean(0, keepdim=True)
    return {
        "GradAvg": lambda: peers.grad_avg(G),
        "AgrSum": lambda: peers.agr_sum(G),
        "PCGrad": lambda: peers.pcgrad(G, order="fixed"),
    }[name]().unsqueeze(0)


@pytest.mark.parametrize(
    "name,options",
    [("DGE", {}), ("DGE", {"dge_update": "mean"}), ("GradAvg", {}), ("AgrSum", {}), ("PCGrad", {"pcgrad_order": "fixed"})],
)
def test_mdg_update_applies_the_combined_directions(host, name, options):
    algorithm = make(host, name, 3, **options)
    batches = minibatches(3)
    before = flat_parameters(algorithm)
    # Every direction comes from the gradients at the starting parameters.
    directions = expected_directions(name, domain_gradients(algorithm, batches), **options)
    results = algorithm.update(batches)
    expected = before - 0.1 * directions.sum(dim=0)
    torch.testing.assert_close(flat_parameters(algorithm), expected, rtol=1e-4, atol=1e-6)
    assert all(type(value) is float for value in results.values())
    assert results["skipped_nonfinite"] == 0.0


def test_dge_reports_and_keeps_its_weights(host):
    algorithm = make(host, "DGE", 1, dge_num_views=4, dge_weight_lr=5.0)
    results = algorithm.update(minibatches(1))
    weights = [results[f"dge_weight_{k}"] for k in range(4)]
    assert torch.equal(algorithm.equilibrium_weights, torch.tensor(weights, dtype=torch.float32))
    assert "equilibrium_weights" in algorithm.state_dict()
    for key in ("loss", "grad_cosine", "pair_conflict_fraction", "direction_norm_ratio", "dge_adjusted_pairs", "dge_net_vs_gradavg"):
        assert isinstance(results[key], float)


def test_sdg_uses_k_views_of_the_one_minibatch(host):
    algorithm = make(host, "GradAvg", 1, dge_num_views=3)
    calls = []
    original = algorithm.view_maker.views
    algorithm.view_maker.views = lambda x, count: calls.append(count) or original(x, count)
    algorithm.update(minibatches(1))
    assert calls == [3] and algorithm._gradients.matrix.shape[0] == 3


@pytest.mark.parametrize("name", ["DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad"])
def test_nonfinite_step_is_skipped_and_changes_nothing(host, name):
    algorithm = make(host, name, 3, dge_optimizer="adam")
    algorithm.update(minibatches(3, seed=1))
    bad = minibatches(3, seed=2)
    bad[1][0][0, 0, 0, 0] = float("nan")
    assert_skipped_and_unchanged(algorithm, bad)
    assert algorithm.update(minibatches(3, seed=3))["skipped_nonfinite"] == 0.0


@pytest.mark.parametrize(
    "key,value,message",
    [("dge_alpha", 2.0, "'dge_alpha' = 2.0"), ("dge_num_views", 1, "'dge_num_views' = 1"), ("dge_update", "x", "sequential, mean")],
)
def test_bad_hparams_fail_at_construction(host, key, value, message):
    from domainbed_dge.plugin.hparams import HParamError

    with pytest.raises(HParamError, match=message):
        make(host, "DGE", 1, **{key: value})


def test_views_are_made_in_sdg_only(host):
    """MDG trains on the environments themselves: a view setting that does not fit the
    input (ImageNet statistics for 2-channel images) is refused in SDG only."""
    from domainbed_dge.plugin.hparams import HParamError

    algorithms, hparams_registry = host
    hparams = {**hparams_registry.default_hparams("DGE", "Debug28"), "dge_input_normalization": "imagenet"}
    mdg = algorithms.get_algorithm_class("DGE")((2, 28, 28), NUM_CLASSES, 3, hparams)
    assert mdg.view_maker is None
    with pytest.raises(HParamError, match="DGE: hyperparameter 'dge_input_normalization' = 'imagenet' is not "
                       "allowed for 2-channel images .*; allowed here: none"):
        algorithms.get_algorithm_class("DGE")((2, 28, 28), NUM_CLASSES, 1, hparams)


def test_checkpoint_round_trip_restores_predictions_and_weights(host):
    algorithms, _ = host
    algorithm = make(host, "DGE", 1, dge_weight_lr=3.0)
    # Uniform weights stay put until an adjustment happens (sum_k S_k = 0), so start
    # from uneven ones to see the state move and come back.
    algorithm.equilibrium_weights.copy_(torch.tensor([1.0, 0.6, 0.3]))
    for seed in range(3):
        algorithm.update(minibatches(1, seed=seed))
    buffer = io.BytesIO()
    torch.save({"model_hparams": algorithm.hparams, "model_dict": algorithm.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = algorithms.get_algorithm_class("DGE")(INPUT_SHAPE, NUM_CLASSES, 1, saved["model_hparams"])
    restored.load_state_dict(saved["model_dict"])
    assert torch.equal(restored.equilibrium_weights, algorithm.equilibrium_weights)
    assert not torch.equal(restored.equilibrium_weights, torch.tensor([1.0, 0.6, 0.3]))
    x = minibatches(1, seed=9)[0][0]
    algorithm.eval(), restored.eval()
    assert torch.equal(restored.predict(x), algorithm.predict(x))


def test_baseline_is_one_clean_view_trained_like_plain_sgd(host):
    # GradAvg with K = 1 and no augmentation is vanilla training: one SGD step on the batch.
    algorithm = make(host, "GradAvg", 1, dge_num_views=1, dge_augment="none")
    batch = minibatches(1)
    before = flat_parameters(algorithm)
    gradient = domain_gradients(algorithm, batch)[0]
    results = algorithm.update(batch)
    torch.testing.assert_close(flat_parameters(algorithm), before - 0.1 * gradient, rtol=1e-4, atol=1e-6)
    assert algorithm._gradients.matrix.shape[0] == 1 and results["grad_cosine"] == 0.0


@pytest.mark.parametrize("name", ["DGE", "PCGrad", "AgrSum", "AgrRand"])
def test_methods_that_compare_domains_refuse_one_view(host, name):
    from domainbed_dge.plugin.hparams import HParamError

    with pytest.raises(HParamError, match=rf"{name}: hyperparameter 'dge_num_views' = 1 .*>= 2"):
        make(host, name, 1, dge_num_views=1)


def test_step_matched_control_takes_k_steps_of_the_mean_gradient(host):
    # "GradAvg x K": DGE with adjustment and reweighting off. With plain SGD and a
    # linear model the K steps add up to K times GradAvg's step.
    algorithm = make(host, "DGE", 3, dge_adjust=False, dge_reweight=False)
    batches = minibatches(3)
    before = flat_parameters(algorithm)
    results = algorithm.update(batches)
    assert results["dge_net_vs_gradavg"] == pytest.approx(0.0, abs=1e-6)
    assert all(results[f"dge_weight_{k}"] == 1.0 for k in range(3))
    # The K steps are sequential: each after the last, from the same mean gradient.
    mean = domain_gradients(make(host, "DGE", 3), batches).mean(dim=0)
    torch.testing.assert_close(flat_parameters(algorithm), before - 0.3 * mean, rtol=1e-4, atol=1e-6)


def test_fixed_view_seeds_come_from_the_run_seed_and_travel_with_checkpoints(host):
    algorithms, _ = host
    algorithm = make(host, "DGE", 1, dge_view_sampling="fixed")
    seeds = algorithm.view_maker.seeds
    assert len(seeds) == 3 and make(host, "DGE", 1, dge_view_sampling="fixed").view_maker.seeds == seeds
    torch.manual_seed(5)  # another run seed gives other views
    other = algorithms.get_algorithm_class("DGE")(INPUT_SHAPE, NUM_CLASSES, 1, algorithm.hparams)
    assert other.view_maker.seeds != seeds
    other.load_state_dict(algorithm.state_dict())
    assert other.view_maker.seeds == seeds
    x = minibatches(1)[0][0]
    for a, b in zip(algorithm.view_maker.views(x, 3), other.view_maker.views(x, 3)):
        torch.testing.assert_close(a, b)
    assert "fixed_view_seeds" not in make(host, "DGE", 1).state_dict()


def test_reset_weights_log_one_step_from_one_every_iteration(host):
    algorithm = make(host, "DGE", 1, dge_weights="reset", dge_weight_lr=5.0)
    persistent = make(host, "DGE", 1, dge_weight_lr=5.0)
    algorithm.equilibrium_weights.fill_(0.1)
    persistent.equilibrium_weights.fill_(1.0)
    torch.manual_seed(0)
    reset_results = algorithm.update(minibatches(1))
    torch.manual_seed(0)
    fresh_results = persistent.update(minibatches(1))
    for k in range(3):
        assert reset_results[f"dge_weight_{k}"] == pytest.approx(fresh_results[f"dge_weight_{k}"])


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad"])
def test_update_runs_on_cuda_end_to_end(host, name):
    algorithm = make(host, name, 1).cuda()
    batch = [(x.cuda(), y.cuda()) for x, y in minibatches(1)]
    results = algorithm.update(batch)
    assert results["skipped_nonfinite"] == 0.0
    assert algorithm._gradients.matrix.is_cuda
    assert algorithm.predict(batch[0][0]).is_cuda
