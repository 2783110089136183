"""The hyperparameter table: plain values, determinism, validation messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from domainbed_dge.plugin import methods as registry


def states(seed):
    return lambda name: np.random.RandomState(abs(hash((seed, name))) % 2**31)


PLAIN = (int, float, str, bool)


def is_plain(value) -> bool:
    """A JSON scalar, or a non-empty list of them (``randconv_kernel_sizes``, ``mixstyle_layers``):
    what ``--hparams`` and DomainBed's sweep carry unchanged."""
    if isinstance(value, list):
        return bool(value) and all(type(item) in PLAIN for item in value)
    return type(value) in PLAIN


@pytest.mark.parametrize("algorithm", registry.NAMES)
@pytest.mark.parametrize("dataset", ["RotatedMNIST", "ColoredMNIST", "PACS", "DomainNet"])
def test_defaults_and_draws_are_valid_plain_values(algorithm, dataset):
    entries = registry.define(algorithm, dataset, states(3))
    for default, drawn in entries.values():
        for value in (default, drawn):
            assert is_plain(value), value
    json.dumps(entries)
    registry.validate(algorithm, {name: default for name, (default, _) in entries.items()})
    registry.validate(algorithm, {name: drawn for name, (_, drawn) in entries.items()})


def test_only_dge_has_equilibrium_hparams_and_only_pcgrad_its_options():
    assert "dge_alpha" in registry.define("DGE", "PACS", states(0))
    assert "dge_alpha" not in registry.define("GradAvg", "PACS", states(0))
    assert "pcgrad_order" in registry.define("PCGrad", "PACS", states(0))
    assert "dge_alpha" not in registry.define("ERM", "PACS", states(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_domainbeds_algorithms_get_views_as_domains_off_and_adam_even_when_drawn(seed):
    entries = registry.define("Mixup", "PACS", states(seed))
    assert [h.name for h in registry.HOST_HPARAMS] == list(entries)
    assert entries["dge_num_views"] == (0, 0) and entries["dge_optimizer"] == ("adam", "adam")


def test_domainbeds_algorithms_refuse_one_view_and_misspelled_plugin_keys_only():
    known = {"lr", "mixup_alpha", *registry.define("Mixup", "PACS", states(0))}
    registry.validate("Mixup", {"lr": 0.1, "not_a_plugin_key": 1}, known=known)  # DomainBed ignores it; defaults
    registry.validate("Mixup", {"dge_num_views": 3, "dge_optimizer": "sgd"}, known=known)
    with pytest.raises(registry.HParamError, match="'dge_num_views' = 1 is not allowed; allowed: 0 .*one view is one"):
        registry.validate("Mixup", {"dge_num_views": 1}, known=known)
    with pytest.raises(registry.HParamError, match="'dge_momentun' is not one of Mixup's; did you mean 'dge_momentum'"):
        registry.validate("Mixup", {"dge_momentun": 0.9}, known=known)


def test_normalisation_follows_the_dataset():
    assert registry.define("DGE", "RotatedMNIST", states(0))["dge_input_normalization"] == ("none", "none")
    assert registry.define("DGE", "PACS", states(0))["dge_input_normalization"] == ("imagenet", "imagenet")


BAD = [
    ("dge_alpha", 1.5, "[0, 1]"),
    ("dge_alpha", "0.5", "[0, 1]"),
    ("dge_num_views", 1, ">= 2"),
    ("dge_num_views", 2.0, ">= 2"),
    ("dge_update", "average", "sequential, mean"),
    ("dge_augment", "cutout", "randaugment"),
    ("dge_weight_lr", 0, "> 0"),
    ("dge_weight_steps", -1, ">= 0"),
    ("dge_random_ops", 0, ">= 1"),
    ("dge_magnitude", 31, "[0, 30]"),
    ("dge_adjust", 1, "true or false"),
    ("dge_optimizer", "rmsprop", "adam, sgd"),
    ("dge_cuda_graphs", "yes", "true or false"),
    ("sweep_variant", "", "a non-empty string"),
    ("sweep_targets", [], "a non-empty list of target environment indices"),
    ("sweep_targets", 4, "a non-empty list of target environment indices"),
    ("sweep_targets", ["real"], "a non-empty list of target environment indices"),
]


@pytest.mark.parametrize("key,value,allowed", BAD)
def test_bad_values_name_key_value_and_what_is_allowed(key, value, allowed):
    hparams = {name: default for name, (default, _) in registry.define("DGE", "PACS", states(0)).items()}
    hparams[key] = value
    with pytest.raises(registry.HParamError) as error:
        registry.validate("DGE", hparams)
    message = str(error.value)
    assert key in message and repr(value) in message and allowed in message


def test_labels_are_accepted_when_well_formed():
    hparams = {name: default for name, (default, _) in registry.define("DGE", "PACS", states(0)).items()}
    registry.validate("DGE", {**hparams, "sweep_variant": "DGE (reset weights)", "sweep_targets": [4]},
                      known=hparams)


def test_missing_key_is_named():
    hparams = {name: default for name, (default, _) in registry.define("PCGrad", "PACS", states(0)).items()}
    del hparams["pcgrad_order"]
    with pytest.raises(registry.HParamError, match="'pcgrad_order' is missing"):
        registry.validate("PCGrad", hparams)


README = Path(__file__).resolve().parents[2] / "README.md"
#: DomainBed's datasets with a per-dataset default, and the plugin's OfflineDigits.
DATASETS = ("Debug28", "RotatedMNIST", "ColoredMNIST", "OfflineDigits", "PACS", "VLCS", "OfficeHome",
            "TerraIncognita", "DomainNet")


def readme_hparam_rows() -> dict[str, str]:
    """``{name: default cell}`` of the README's "Hyperparameters" table."""
    section = README.read_text().split("\n## Hyperparameters\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if line.startswith("| `") and len(cells) >= 3:
            for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
                rows.setdefault(name, cells[2])
    return rows


def test_readme_documents_every_hyperparameter_and_each_dataset_with_its_own_default():
    rows = readme_hparam_rows()
    for algorithm in (*registry.NAMES, "ERM"):
        for h in registry.hparams_of(algorithm):
            assert h.name in rows, f"README's hyperparameter table lacks {h.name!r} ({algorithm})"
            values = [json.dumps(h.default(dataset)) for dataset in DATASETS]
            usual = max(set(values), key=values.count)
            for dataset, value in zip(DATASETS, values):
                if value != usual:
                    assert dataset in rows[h.name], (
                        f"README's default of {h.name!r} does not name {dataset} (default {value})")
