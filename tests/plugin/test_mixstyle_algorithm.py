"""MixStyle in DomainBed: its hyperparameters, where its hooks sit, that eval-mode
predictions are the hookless network's, its update, and train.py runs in SDG and MDG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import read_results
from domainbed_dge.plugin import methods


def defaults(dataset="PACS"):
    entries = methods.define("MixStyle", dataset, lambda name: np.random.RandomState(0))
    return {name: default for name, (default, _) in entries.items()}


def test_defaults_are_the_authors():
    assert defaults() == {"dge_optimizer": "adam", "dge_momentum": 0.9, "mixstyle_p": 0.5, "mixstyle_alpha": 0.1,
                          "mixstyle_eps": 1e-6, "mixstyle_layers": [1, 2, 3], "mixstyle_mix": "random"}
    rule = methods.BY_NAME["MixStyle"].build(defaults())
    assert (rule.p, rule.alpha, rule.eps, rule.mix) == (0.5, 0.1, 1e-6, "random")


def test_random_search_draws_lower_stage_sets_and_p_alpha_in_their_ranges():
    draws = [methods.define("MixStyle", "PACS", lambda name: np.random.RandomState(hash((seed, name)) % 2**31))
             for seed in range(60)]
    assert {tuple(d["mixstyle_layers"][1]) for d in draws} == {(1,), (1, 2), (1, 2, 3)}
    assert all(0.2 <= d["mixstyle_p"][1] <= 0.8 and 0.05 <= d["mixstyle_alpha"][1] <= 0.5 for d in draws)
    assert {d["mixstyle_eps"][1] for d in draws} == {1e-6}


@pytest.mark.parametrize("key,value,allowed", [
    ("mixstyle_p", 1.5, "a number in [0, 1]"),
    ("mixstyle_p", True, "a number in [0, 1]"),
    ("mixstyle_alpha", 0, "a number > 0"),
    ("mixstyle_eps", 0.0, "a number > 0"),
    ("mixstyle_layers", [], "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_layers", [1, 1], "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_layers", [0, 5], "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_layers", [1, 4], "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_layers", 3, "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_layers", [1.0, 2.0], "a non-empty list of distinct stage numbers among 1, 2, 3"),
    ("mixstyle_mix", "domain", "one of random, crossdomain"),
])
def test_bad_values_name_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(methods.HParamError) as error:
        methods.validate("MixStyle", {**defaults(), key: value})
    message = str(error.value)
    assert key in message and repr(value) in message and allowed in message


class Recorder(torch.nn.Module):
    """Stands in for the MixStyle module: records the shapes it is called on."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x


def random_init():
    """DomainBed's ResNets randomly initialised: no ImageNet weights to download."""
    from domainbed_dge.experiments.timing import random_init_resnets

    return random_init_resnets()


def build(dataset, input_shape, num_domains=1, **overrides):
    from domainbed import algorithms, hparams_registry

    hparams = hparams_registry.default_hparams("MixStyle", dataset)
    hparams.update(resnet18=True, resnet50_augmix=False, **overrides)
    torch.manual_seed(0)
    with random_init():
        return algorithms.get_algorithm_class("MixStyle")(input_shape, 7, num_domains, hparams)


def hooked(algorithm):
    return sorted(name for name, module in algorithm.featurizer.named_modules() if module._forward_hooks)


@pytest.mark.domainbed
def test_resnet18_hooks_follow_layers_one_to_three_by_default():
    algorithm = build("PACS", (3, 224, 224))
    assert type(algorithm.featurizer.network).__name__ == "ResNet" and algorithm.featurizer.n_outputs == 512
    assert hooked(algorithm) == ["network.layer1", "network.layer2", "network.layer3"]
    algorithm.rule = Recorder()
    algorithm.train()
    algorithm.predict(torch.randn(2, 3, 64, 64))
    assert algorithm.rule.shapes == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]


@pytest.mark.domainbed
def test_mnist_cnn_hooks_follow_the_groupnorm_of_the_chosen_blocks():
    algorithm = build("RotatedMNIST", (1, 28, 28))
    assert hooked(algorithm) == ["bn0", "bn1", "bn2"]
    algorithm = build("RotatedMNIST", (1, 28, 28), mixstyle_layers=[3, 2])
    assert hooked(algorithm) == ["bn1", "bn2"]
    algorithm.rule = Recorder()
    algorithm.train()
    algorithm.predict(torch.randn(2, 1, 28, 28))
    assert algorithm.rule.shapes == [(2, 128, 14, 14), (2, 128, 14, 14)]


@pytest.mark.domainbed
def test_other_featurizers_and_bad_layers_are_refused_at_construction():
    from domainbed import networks

    from domainbed_dge.plugin.mixstyle import mixstyle_stages

    with pytest.raises(NotImplementedError, match="featurizer Wide_ResNet is not supported"):
        build("RotatedMNIST", (3, 32, 32))
    mlp = networks.MLP(10, 8, {"mlp_width": 4, "mlp_depth": 3, "mlp_dropout": 0.0})
    with pytest.raises(NotImplementedError, match="featurizer MLP is not supported"):
        mixstyle_stages(mlp, [1])
    with pytest.raises(methods.HParamError, match=r"'mixstyle_layers' = \[2, 5\] is not allowed"):
        build("RotatedMNIST", (1, 28, 28), mixstyle_layers=[2, 5])


@pytest.mark.domainbed
@pytest.mark.parametrize("dataset,input_shape", [("RotatedMNIST", (1, 28, 28)), ("PACS", (3, 224, 224))])
def test_eval_predictions_are_the_hookless_networks_and_training_mixes(dataset, input_shape):
    from domainbed import networks

    algorithm = build(dataset, input_shape, mixstyle_p=1.0)
    with random_init():
        plain = torch.nn.Sequential(networks.Featurizer(input_shape, algorithm.hparams),
                                    networks.Classifier(algorithm.featurizer.n_outputs, 7))
    plain.load_state_dict(algorithm.network.state_dict())
    side = 28 if dataset == "RotatedMNIST" else 64
    x = torch.randn(4, input_shape[0], side, side)
    algorithm.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(algorithm.predict(x), plain(x))
        algorithm.train(), algorithm.featurizer.eval()  # the hooked stages' mode decides
        assert torch.equal(algorithm.predict(x), plain(x))
        algorithm.train(), plain.train()
        assert not torch.allclose(algorithm.predict(x), plain(x), atol=1e-3)


@pytest.mark.domainbed
def test_update_takes_one_step_of_erms_loss_and_reports_the_mixed_share():
    algorithm = build("RotatedMNIST", (1, 28, 28), num_domains=2, dge_optimizer="sgd", dge_momentum=0.0, lr=0.1,
                      mixstyle_p=0.0)
    generator = torch.Generator().manual_seed(0)
    minibatches = [(torch.randn(3, 1, 28, 28, generator=generator), torch.randint(0, 7, (3,), generator=generator))
                   for _ in range(2)]
    before = [p.detach().clone() for p in algorithm.network.parameters()]
    x, y = torch.cat([x for x, _ in minibatches]), torch.cat([y for _, y in minibatches])
    loss = torch.nn.functional.cross_entropy(algorithm.predict(x), y)
    grads = torch.autograd.grad(loss, list(algorithm.network.parameters()))
    results = algorithm.update(minibatches)
    assert results == {"loss": pytest.approx(loss.item()), "mixstyle_applied_fraction": 0.0}
    for old, new, grad in zip(before, algorithm.network.parameters(), grads):
        torch.testing.assert_close(new.detach(), old - 0.1 * grad)
    algorithm.rule.p = 1.0
    assert algorithm.update(minibatches)["mixstyle_applied_fraction"] == 1.0


@pytest.mark.domainbed
@pytest.mark.parametrize("test_envs", [("1", "2", "3", "4", "5"), ("4", "5")], ids=["SDG", "MDG"])
def test_trains_through_domainbed_train_py(train, test_envs):
    output = train("MixStyle", "--hparams", json.dumps({"dge_optimizer": "sgd", "batch_size": 8}),
                   test_envs=test_envs)
    records = read_results(output)
    assert records and all(record["hparams"]["mixstyle_layers"] == [1, 2, 3] for record in records)
    for record in records:
        assert 0.0 <= record["mixstyle_applied_fraction"] <= 1.0 and record["loss"] == record["loss"]
