"""RandConv and Pro-RandConv in DomainBed: one ``update`` is one optimizer step on the
cross-entropy of the convolved batch (plus lambda times the consistency loss of the
views the core makes), replayed from torch's seed on a copy of the network; bad values
are refused; both train through DomainBed's train.py in SDG and MDG, reproducibly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import read_results
from domainbed_dge.core.random_convolutions import consistency_loss
from domainbed_dge.plugin import methods as registry

pytestmark = pytest.mark.domainbed

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
SGD = '{"dge_optimizer": "sgd", "batch_size": 8}'
DIAGNOSTICS = {
    "RandConv": ["loss", "consistency_loss", "randconv_identity_fraction", "randconv_kernel_size"],
    "ProRandConv": ["loss", "prorandconv_repeats", "prorandconv_smoothing_sigma", "prorandconv_offset_std"],
}


def make(name, num_domains=1, **overrides):
    from domainbed import algorithms, hparams_registry

    hparams = hparams_registry.default_hparams(name, "RotatedMNIST")
    hparams.update({"dge_optimizer": "sgd", "dge_momentum": 0.0, "lr": 0.1, **overrides})
    torch.manual_seed(0)
    return algorithms.get_algorithm_class(name)(INPUT_SHAPE, NUM_CLASSES, num_domains, hparams)


def minibatches(count=1, batch=8):
    generator = torch.Generator().manual_seed(3)
    return [(torch.rand(batch, *INPUT_SHAPE, generator=generator),
             torch.randint(0, NUM_CLASSES, (batch,), generator=generator)) for _ in range(count)]


def replayed_step(algorithm, batches, seed):
    """What one update should do, replayed from ``seed`` on a copy: the same draws from
    torch's generator, CE on the first view (+ lambda consistency), one SGD step."""
    reference = copy.deepcopy(algorithm)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    torch.manual_seed(seed)
    convolution = reference.rule.sample(x.shape)
    first_view = convolution(x)
    logits = reference.network(first_view)
    loss = F.cross_entropy(logits, y)
    objective, consistency = loss, None
    if reference.rule.consistency_weight > 0:
        views = reference.rule.consistency_inputs(x, first_view)
        consistency = consistency_loss([logits, *(reference.network(v) for v in views)])
        objective = loss + reference.rule.consistency_weight * consistency
    reference.optimizer.zero_grad()
    objective.backward()
    reference.optimizer.step()
    return reference, loss.item(), consistency, convolution.diagnostics()


@pytest.mark.parametrize("name,overrides,num_domains", [
    ("RandConv", {}, 1),
    ("RandConv", {"randconv_variant": "mix", "randconv_consistency_views": "independent",
                  "randconv_consistency_weight": 10.0}, 1),
    ("RandConv", {"randconv_consistency_weight": 0.0, "randconv_identity_prob": 0.0}, 2),
    ("RandConv", {"randconv_pixel_range": "signed"}, 1),
    ("ProRandConv", {"prorandconv_max_repeats": 3}, 1),
    ("ProRandConv", {"prorandconv_pixel_range": "signed"}, 1),
    ("ProRandConv", {}, 2),
])
def test_one_update_is_one_step_on_the_replayed_objective(name, overrides, num_domains):
    algorithm = make(name, num_domains, **overrides)
    batches = minibatches(num_domains)
    for seed in (5, 6):  # the img variant keeps the image with seed 5 and convolves it with seed 6
        reference, loss, consistency, diagnostics = replayed_step(algorithm, batches, seed)
        torch.manual_seed(seed)
        results = algorithm.update(batches)
        for mine, theirs in zip(algorithm.network.parameters(), reference.network.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
        assert results["loss"] == pytest.approx(loss, rel=1e-5)
        assert {k: results[k] for k in diagnostics} == diagnostics
        if consistency is None:
            assert "consistency_loss" not in results
        else:
            assert results["consistency_loss"] == pytest.approx(consistency.item(), rel=1e-4, abs=1e-7)
        assert all(isinstance(value, float) for value in results.values())


def test_the_img_variant_keeps_the_image_in_some_steps_and_convolves_it_in_others():
    algorithm = make("RandConv")
    kept = {algorithm.update(minibatches())["randconv_identity_fraction"] for _ in range(12)}
    assert kept == {0.0, 1.0}


def test_evaluation_sees_the_clean_image():
    algorithm = make("ProRandConv")
    x = minibatches()[0][0]
    torch.testing.assert_close(algorithm.predict(x), algorithm.network(x))


def states(name):
    return np.random.RandomState(abs(hash(name)) % 2**31)


def test_defaults_are_the_authors_and_b_delta_follows_the_image_size():
    randconv = {k: v for k, (v, _) in registry.define("RandConv", "RotatedMNIST", states).items()}
    assert randconv["randconv_kernel_sizes"] == [1, 3, 5, 7] and randconv["randconv_variant"] == "img"
    assert randconv["randconv_identity_prob"] == 0.5 and randconv["randconv_consistency_weight"] == 5.0
    assert randconv["randconv_consistency_views"] == "released"
    assert randconv["randconv_pixel_range"] == "as_given"
    assert registry.define("ProRandConv", "RotatedMNIST", states)["prorandconv_pixel_range"][0] == "as_given"
    assert registry.define("ProRandConv", "RotatedMNIST", states)["prorandconv_offset_std"][0] == 0.2
    assert registry.define("ProRandConv", "PACS", states)["prorandconv_offset_std"][0] == 0.5
    assert registry.define("ProRandConv", "PACS", states)["prorandconv_max_repeats"][0] == 10


BAD = [
    ("RandConv", "randconv_variant", "both", "img, mix"),
    ("RandConv", "randconv_kernel_sizes", [2, 3], "distinct odd integers >= 1"),
    ("RandConv", "randconv_kernel_sizes", [], "distinct odd integers >= 1"),
    ("RandConv", "randconv_kernel_sizes", 3, "distinct odd integers >= 1"),
    ("RandConv", "randconv_kernel_sizes", [3, 3], "distinct odd integers >= 1"),
    ("RandConv", "randconv_identity_prob", 1.5, "[0, 1]"),
    ("RandConv", "randconv_consistency_weight", -1.0, ">= 0"),
    ("RandConv", "randconv_consistency_views", "twice", "released, independent"),
    ("RandConv", "randconv_pixel_range", "unit", "as_given, signed"),
    ("ProRandConv", "prorandconv_pixel_range", "unit", "as_given, signed"),
    ("ProRandConv", "prorandconv_max_repeats", 0, ">= 1"),
    ("ProRandConv", "prorandconv_max_repeats", 2.5, ">= 1"),
    ("ProRandConv", "prorandconv_offset_std", 0.0, ">= 0.0001"),
    ("ProRandConv", "prorandconv_affine_std", -0.5, ">= 0"),
]


@pytest.mark.parametrize("algorithm,key,value,allowed", BAD)
def test_bad_values_name_key_value_and_what_is_allowed(algorithm, key, value, allowed):
    hparams = {name: default for name, (default, _) in registry.define(algorithm, "PACS", states).items()}
    with pytest.raises(registry.HParamError) as error:
        registry.validate(algorithm, {**hparams, key: value})
    message = str(error.value)
    assert key in message and repr(value) in message and allowed in message


def without_timing(record):
    """A results.jsonl record less what differs between identical runs: timing and the output folder."""
    return {key: value for key, value in record.items() if key not in ("step_time", "args")}


@pytest.mark.parametrize("algorithm", ["RandConv", "ProRandConv"])
def test_sdg_training_through_train_py_is_reproducible(train, algorithm):
    first = read_results(train(algorithm, "--hparams", SGD, name="first"))
    second = read_results(train(algorithm, "--hparams", SGD, name="second"))
    assert len(first) == 2 and [without_timing(r) for r in first] == [without_timing(r) for r in second]
    for key in DIAGNOSTICS[algorithm]:
        assert isinstance(first[-1][key], float), key
    assert first[-1]["args"]["test_envs"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("algorithm", ["RandConv", "ProRandConv"])
def test_mdg_training_through_train_py(train, algorithm):
    record = read_results(train(algorithm, "--hparams", SGD, test_envs=("4", "5")))[-1]
    for key in DIAGNOSTICS[algorithm]:
        assert isinstance(record[key], float), key
    assert record["hparams"]["dge_optimizer"] == "sgd" and record["args"]["test_envs"] == [4, 5]
