"""GSAM and SAGM in DomainBed: one ``update`` moves MNIST_CNN exactly as the closed form
says, with d computed by autograd on a copy of the network; the weights come back
exactly; BatchNorm statistics see each step once; bad steps and bad values are refused;
and both train through DomainBed's train.py in SDG and MDG."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from conftest import assert_skipped_and_unchanged, read_results

pytestmark = pytest.mark.domainbed

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
LR = 0.1
#: Larger than the defaults, so that each method's step is far from plain SGD's and SAM's.
STRONG = {"GSAM": {"gsam_rho": 0.5, "gsam_alpha": 0.5}, "SAGM": {"sagm_rho": 0.5, "sagm_alpha": 0.05}}
DIAGNOSTICS = ["loss", "loss_perturbed", "perturbation_norm", "perturbed_grad_cosine", "direction_norm_ratio",
               "skipped_nonfinite"]


def make(name, num_domains=1, **overrides):
    from domainbed import algorithms, hparams_registry

    hparams = hparams_registry.default_hparams(name, "RotatedMNIST")
    hparams.update({"dge_optimizer": "sgd", "dge_momentum": 0.0, "lr": LR, **overrides})
    torch.manual_seed(0)
    return algorithms.get_algorithm_class(name)(INPUT_SHAPE, NUM_CLASSES, num_domains, hparams)


def minibatches(count=1, seed=0, batch=8):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, *INPUT_SHAPE, generator=generator),
         torch.randint(0, NUM_CLASSES, (batch,), generator=generator))
        for _ in range(count)
    ]


def loss_and_gradient(network, x, y):
    parameters = [p for p in network.parameters() if p.requires_grad]
    loss = F.cross_entropy(network(x), y)
    return loss.item(), parameters_to_vector(torch.autograd.grad(loss, parameters))


def reference_step(name, network, x, y, rho, alpha):
    """The closed form, by autograd on a copy of ``network``: ``w - lr d`` with ``g`` at
    ``w`` and ``g_p`` at ``w + e``; also ``w - lr g`` (plain SGD) and ``w - lr g_p`` (SAM's
    step, for GSAM) and the two losses."""
    copy_ = copy.deepcopy(network)
    parameters = [p for p in copy_.parameters() if p.requires_grad]
    w = parameters_to_vector(parameters).detach()
    loss, g = loss_and_gradient(copy_, x, y)
    e = rho * g / (g.norm() + 1e-12)
    if name == "SAGM":
        e = e - alpha * g
    with torch.no_grad():
        vector_to_parameters(w + e, parameters)
    loss_perturbed, g_p = loss_and_gradient(copy_, x, y)
    if name == "GSAM":
        g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
        d = g_p - alpha * g_perp
    else:
        d = (g + g_p) / 2
    return {"expected": w - LR * d, "plain": w - LR * g, "sam": w - LR * g_p, "loss": loss,
            "loss_perturbed": loss_perturbed, "perturbation_norm": e.norm().item()}


def flat(algorithm):
    return parameters_to_vector(algorithm.trainable).detach()


@pytest.mark.parametrize("name", ["GSAM", "SAGM"])
@pytest.mark.parametrize("num_domains", [1, 3])
def test_update_is_w_minus_lr_d_with_d_from_autograd_on_a_copy(name, num_domains):
    algorithm = make(name, num_domains, **STRONG[name])
    batches = minibatches(num_domains)
    x, y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    rho, alpha = STRONG[name].values()
    reference = reference_step(name, algorithm.network, x, y, rho, alpha)
    results = algorithm.update(batches)
    after = flat(algorithm)
    torch.testing.assert_close(after, reference["expected"], rtol=1e-5, atol=1e-6)
    # The test can tell the method from plain SGD and (for GSAM) from SAM.
    assert (after - reference["plain"]).abs().max() > 1e-3
    if name == "GSAM":
        assert (after - reference["sam"]).abs().max() > 1e-4
    assert all(type(results[key]) is float for key in DIAGNOSTICS)
    assert results["skipped_nonfinite"] == 0.0
    assert results["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert results["loss_perturbed"] == pytest.approx(reference["loss_perturbed"], rel=1e-5)
    assert results["perturbation_norm"] == pytest.approx(reference["perturbation_norm"], rel=1e-5)
    assert -1.0 <= results["perturbed_grad_cosine"] <= 1.0


@pytest.mark.parametrize("name", ["GSAM", "SAGM"])
def test_weights_are_restored_exactly_when_lr_is_zero(name):
    algorithm = make(name, lr=0.0, **STRONG[name])
    before = copy.deepcopy(algorithm.state_dict())
    results = algorithm.update(minibatches())
    assert results["perturbation_norm"] > 0.01  # the weights did move, and came back
    for key, value in algorithm.state_dict().items():
        assert torch.equal(value, before[key]), key


def batchnorm_network(momentum):
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, momentum=momentum), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, NUM_CLASSES),
    )


def with_network(algorithm, network, optimizer="sgd"):
    algorithm.network = network
    algorithm.optimizer = (torch.optim.SGD(network.parameters(), lr=LR) if optimizer == "sgd"
                           else torch.optim.Adam(network.parameters(), lr=LR))
    return algorithm


@pytest.mark.parametrize("name", ["GSAM", "SAGM"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum 0.1", "cumulative"])
def test_batchnorm_statistics_see_each_step_once(name, momentum):
    algorithm = with_network(make(name, **STRONG[name]), batchnorm_network(momentum))
    once = copy.deepcopy(algorithm.network)
    x, y = minibatches()[0]
    once(x)  # one forward pass in train mode at w
    rho, alpha = STRONG[name].values()
    expected = reference_step(name, algorithm.network, x, y, rho, alpha)["expected"]
    algorithm.update([(x, y)])
    bn, bn_once = algorithm.network[1], once[1]
    assert bn.training and bn.num_batches_tracked.item() == 1
    torch.testing.assert_close(bn.running_mean, bn_once.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, bn_once.running_var, rtol=0, atol=0)
    assert not torch.equal(bn.running_mean, torch.zeros(4))
    # The perturbed pass used the batch's statistics, as in train mode.
    torch.testing.assert_close(flat(algorithm), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["GSAM", "SAGM"])
def test_nonfinite_step_is_skipped_and_changes_nothing(name):
    algorithm = with_network(make(name), batchnorm_network(0.1), optimizer="adam")
    algorithm.update(minibatches(seed=1))
    x, y = minibatches(seed=2)[0]
    x[0, 0, 0, 0] = float("nan")
    assert_skipped_and_unchanged(algorithm, [(x, y)])
    assert algorithm.update(minibatches(seed=3))["skipped_nonfinite"] == 0.0


def test_each_rule_is_built_from_the_runs_hyperparameters():
    from domainbed_dge.core.sharpness import GSAMRule, SAGMRule

    assert make("GSAM").rule == GSAMRule(rho=0.04, alpha=0.01)
    assert make("SAGM").rule == SAGMRule(rho=0.05, alpha=0.001)
    assert make("SAGM", sagm_rho=0.02, sagm_alpha=0.0005).rule == SAGMRule(rho=0.02, alpha=0.0005)


@pytest.mark.parametrize(
    "name,key,value,allowed",
    [
        ("GSAM", "gsam_rho", -0.1, "a number >= 0"),
        ("GSAM", "gsam_rho", "0.05", "a number >= 0"),
        ("GSAM", "gsam_alpha", 1.5, "a number in [0, 1]"),
        ("GSAM", "gsam_alpha", True, "a number in [0, 1]"),
        ("SAGM", "sagm_rho", float("inf"), "a number >= 0"),
        ("SAGM", "sagm_alpha", -0.001, "a number in [0, 1]"),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_what_is_allowed(name, key, value, allowed):
    from domainbed_dge.plugin import methods

    entries = methods.define(name, "PACS", lambda _: np.random.RandomState(0))
    hparams = {h: default for h, (default, _) in entries.items()}
    with pytest.raises(methods.HParamError) as error:
        methods.validate(name, {**hparams, key: value})
    message = str(error.value)
    assert key in message and repr(value) in message and allowed in message
    with pytest.raises(methods.HParamError, match=f"'{key}'"):
        make(name, **{key: value})


@pytest.mark.parametrize("name", ["GSAM", "SAGM"])
@pytest.mark.parametrize("test_envs", [("1", "2", "3", "4", "5"), ("4", "5")], ids=["SDG", "MDG"])
def test_train_py_runs_with_sgd_and_records_the_diagnostics(train, name, test_envs):
    records = read_results(train(name, "--hparams", '{"dge_optimizer": "sgd", "batch_size": 8}', test_envs=test_envs))
    assert len(records) == 2
    for record in records:
        for key in DIAGNOSTICS:
            assert isinstance(record[key], float), key
        assert record["skipped_nonfinite"] == 0.0
        assert record["hparams"]["dge_optimizer"] == "sgd"
