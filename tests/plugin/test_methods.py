"""The method registry is the one place a method is defined: DomainBed's classes, the
hyperparameter table and the tables' rows all follow it."""

from __future__ import annotations

import numpy as np
import pytest

from domainbed_dge.plugin import methods
from domainbed_dge.plugin.hparams import ENGINE_HPARAMS, HOST_HPARAMS, OPTIMIZER_HPARAMS


def states(name):
    return np.random.RandomState(abs(hash(name)) % 2**31)


GRADIENT_METHODS = [method for method in methods.METHODS if method.engine == "gradients"]


def test_every_entry_has_its_engines_hyperparameters_and_its_own():
    for method in methods.METHODS:
        names = [h.name for h in methods.hparams_of(method.name)]
        assert len(names) == len(set(names)) and {h.name for h in method.hparams} <= set(names)
        if method.engine == "gradients":
            assert names[0] == "dge_num_views" and {h.name for h in ENGINE_HPARAMS} <= set(names)
        else:  # one batch, no views: the optimiser's keys and its own only
            assert names == [h.name for h in (*OPTIMIZER_HPARAMS, *method.hparams)]
    assert methods.hparams_of("ERM") == HOST_HPARAMS  # DomainBed's own: views as domains, the optimiser


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.name)
def test_min_domains_is_the_least_number_of_views_accepted(method):
    hparams = {name: default for name, (default, _) in methods.define(method.name, "PACS", states).items()}
    methods.validate(method.name, {**hparams, "dge_num_views": method.min_domains})
    with pytest.raises(methods.HParamError, match=f">= {method.min_domains}"):
        methods.validate(method.name, {**hparams, "dge_num_views": method.min_domains - 1})


def test_unknown_keys_name_the_nearest_known_one_and_labels_are_always_known():
    hparams = {name: default for name, (default, _) in methods.define("DGE", "PACS", states).items()}
    known = set(hparams) | {"lr", "batch_size"}
    methods.validate("DGE", {**hparams, "lr": 0.1, "sweep_variant": "x", "sweep_targets": [1]}, known=known)
    with pytest.raises(methods.HParamError, match="'dge_alpah' is not one of DGE's; did you mean 'dge_alpha'"):
        methods.validate("DGE", {**hparams, "dge_alpah": 0.3}, known=known)
    with pytest.raises(methods.HParamError, match="'zzz' is not one of DGE's. Known: "):
        methods.validate("DGE", {**hparams, "zzz": 1}, known=known)


def test_each_combiner_is_built_from_the_runs_hyperparameters():
    from domainbed_dge.core.combiners import EquilibriumCombiner, PCGradCombiner

    dge = {name: default for name, (default, _) in methods.define("DGE", "PACS", states).items()}
    combiner = methods.BY_NAME["DGE"].build({**dge, "dge_weights": "reset", "dge_adjust_against": "original"})
    assert isinstance(combiner, EquilibriumCombiner) and combiner.weights == "reset"
    assert combiner.options["adjust_against"] == "original"
    pcgrad = {name: default for name, (default, _) in methods.define("PCGrad", "PACS", states).items()}
    assert isinstance(methods.BY_NAME["PCGrad"].build(pcgrad), PCGradCombiner)


@pytest.mark.domainbed
def test_domainbed_gets_one_class_per_entry_with_its_summary():
    from domainbed import algorithms

    for method in methods.METHODS:
        cls = algorithms.get_algorithm_class(method.name)
        assert cls.__name__ == method.name and cls.__doc__ == method.summary and cls.method is method
        assert method.name in algorithms.ALGORITHMS


def test_rows_are_labelled_and_ordered_by_the_registry():
    from domainbed_dge.experiments.records import label_of
    from domainbed_dge.experiments.dataset_results import ALGORITHM_ORDER

    assert ALGORITHM_ORDER == ("ERM", *methods.NAMES)
    assert label_of("AgrSum") == "Agr-Sum" and label_of("ERM") == "ERM"
    assert label_of("Mixup", {"dge_num_views": 3}) == "Mixup (views as domains)"
    assert label_of("Mixup", {"dge_num_views": 0}) == "Mixup" and label_of("GradAvg", {"dge_num_views": 3}) == "GradAvg"
