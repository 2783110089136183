"""Presets compare like with like: the shipped presets follow the fairness rules, and
each rule catches the preset that breaks it; sources and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainbed_dge.experiments.presets import (
    TARGETS_HPARAM,
    PresetError,
    fairness_problems,
    load_preset,
    parse_preset,
)

PRESETS = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.json"))
SHARED = {"dge_optimizer": "sgd", "dge_momentum": 0.9, "lr": 0.01, "batch_size": 32, "weight_decay": 0.0}
BASELINE = {"name": "Baseline", "algorithm": "GradAvg", "hparams": {"dge_num_views": 1, "dge_augment": "none"}}
CONTROL = {"name": "GradAvg x K", "algorithm": "DGE", "hparams": {"dge_adjust": False, "dge_reweight": False}}


def preset(*variants, **changes):
    data = {"description": "d", "modes": ["sdg"], "datasets": ["RotatedMNIST"], "n_trials": 1, "n_hparams_from": 0,
            "n_hparams": 1, "steps": 10, "hparams": dict(SHARED), "variants": [BASELINE, CONTROL, *variants]}
    return parse_preset({**data, **changes})


@pytest.mark.parametrize("path", PRESETS, ids=[path.stem for path in PRESETS])
def test_every_shipped_preset_is_a_fair_comparison(path):
    assert fairness_problems(load_preset(str(path))) == []


REFERENCE = {"name": "ERM (DomainBed, Adam; reference)", "algorithm": "ERM",
             "hparams": {"dge_optimizer": "adam", "dge_num_views": 0}}
MIXUP_VIEWS = {"name": "Mixup (views as domains)", "algorithm": "Mixup", "hparams": {"dge_num_views": 3}}


SAGM_AUTHORS = {"name": "SAGM (authors' settings)", "algorithm": "SAGM",
                "hparams": {"dge_optimizer": "adam", "lr": 3e-5, "weight_decay": 1e-4, "freeze_bn": True}}


def test_a_plugin_row_with_its_authors_settings_is_a_reference_and_only_when_it_says_so():
    assert fairness_problems(preset(SAGM_AUTHORS)) == []
    assert fairness_problems(preset({**SAGM_AUTHORS, "name": "SAGM"})) == [
        "variant 'SAGM' sets dge_optimizer = 'adam', not the shared 'sgd'",
        "variant 'SAGM' sets lr = 3e-05, not the shared 0.01",
        "variant 'SAGM' sets weight_decay = 0.0001, not the shared 0.0",
    ]
    assert fairness_problems(preset({**SAGM_AUTHORS, "name": "SAGM (reference)"}))  # a DomainBed mark only


def test_the_pacs_preset_has_sagm_with_its_authors_settings_beside_the_shared_row():
    pacs = load_preset(str(Path(__file__).resolve().parents[2] / "sweeps" / "sdg_pacs.json"))
    rows = {variant.name: variant for variant in pacs.variants if variant.algorithm == "SAGM"}
    assert set(rows) == {"SAGM", "SAGM (authors' settings)"}
    assert rows["SAGM"].hparams == {}
    assert rows["SAGM (authors' settings)"].hparams == {
        "dge_optimizer": "adam", "lr": 3e-5, "weight_decay": 1e-4, "resnet_dropout": 0.5, "freeze_bn": True,
        "sagm_alpha": 0.001, "sagm_rho": 0.05}


def test_a_fair_preset_has_no_problems():
    assert fairness_problems(preset({"name": "DGE", "algorithm": "DGE"}, REFERENCE, MIXUP_VIEWS,
                                    {"name": "Fish", "algorithm": "Fish"})) == []
    assert fairness_problems(preset({"name": "Fish", "algorithm": "Fish"}, variants=[REFERENCE], modes=["mdg"])) == []
    erm_baseline = {"name": "Baseline", "algorithm": "ERM"}
    assert fairness_problems(preset(variants=[erm_baseline, CONTROL], modes=["mdg"])) == []


@pytest.mark.parametrize(
    "broken, problem",
    [
        (preset({"name": "DGE", "algorithm": "DGE", "hparams": {"lr": 0.1}}),
         "variant 'DGE' sets lr = 0.1, not the shared 0.01"),
        (preset(hparams={key: value for key, value in SHARED.items() if key != "weight_decay"}),
         "hparams do not set 'weight_decay'"),
        (preset({"name": "PCGrad", "algorithm": "PCGrad", "hparams": {"dge_optimizer": "adam"}}),
         "variant 'PCGrad' sets dge_optimizer = 'adam'"),
        (preset({**MIXUP_VIEWS, "hparams": {"dge_num_views": 3, "dge_optimizer": "adam"}}),
         "variant 'Mixup (views as domains)' sets dge_optimizer = 'adam', not the shared 'sgd'"),
        (preset({**REFERENCE, "hparams": {}}),
         "variant 'ERM (DomainBed, Adam; reference)' is a reference row of DomainBed's ERM: it must run as DomainBed "
         "does, dge_optimizer 'adam' and dge_num_views 0, has 'sgd' and 0"),
        (preset({**MIXUP_VIEWS, "name": "Mixup"}),
         "variant 'Mixup' has dge_num_views = 3: a row of DomainBed's Mixup says '(views as domains)' in its name"),
        (preset({**MIXUP_VIEWS, "hparams": {}}),
         "variant 'Mixup (views as domains)' has dge_num_views = 0: a row of DomainBed's Mixup says"),
        (preset(variants=[MIXUP_VIEWS], modes=["mdg"]),
         "variant 'Mixup (views as domains)' has dge_num_views = 3, which DomainBed's Mixup refuses in MDG"),
        (preset(variants=[{"name": "Baseline", "algorithm": "ERM"}, CONTROL]),
         "variant 'Baseline' must be GradAvg with dge_num_views 1"),
        (preset(variants=[{"name": "Baseline", "algorithm": "ERM"}, CONTROL], modes=["sdg", "mdg"]),
         "variant 'Baseline' must be GradAvg with dge_num_views 1"),
        (preset(variants=[{**BASELINE, "hparams": {"dge_num_views": 1}}, CONTROL]),
         "variant 'Baseline' must have dge_augment 'none'"),
        (preset({"name": "Baseline + rotation", "algorithm": "GradAvg", "hparams": {"dge_num_views": 3,
                                                                                   "dge_augment": "rotation"}}),
         "variant 'Baseline + rotation' must be GradAvg with dge_num_views 1"),
        (preset({"name": "Baseline + rotation", "algorithm": "GradAvg", "hparams": {"dge_num_views": 1,
                                                                                   "dge_augment": "none"}}),
         "variant 'Baseline + rotation' must have an augmentation"),
        (preset(variants=[BASELINE, {**CONTROL, "hparams": {"dge_adjust": False}}]),
         "variant 'GradAvg x K' must be DGE with dge_adjust and dge_reweight false"),
        (preset(variants=[BASELINE, {**CONTROL, "hparams": {**CONTROL["hparams"], "dge_update": "mean"}}]),
         "variant 'GradAvg x K' must be DGE with dge_adjust and dge_reweight false, sequential updates"),
        (preset({"name": "DGE", "algorithm": "DGE", "hparams": {"dge_num_views": 5}}),
         "variant 'DGE' has dge_num_views = 5 but 'GradAvg x K' has 3 on RotatedMNIST: the control must take the same views"),
        (preset({"name": "DGE", "algorithm": "DGE", "hparams": {"dge_augment": "rotation"}}),
         "variant 'DGE' has dge_augment = 'rotation' but 'GradAvg x K' has 'randaugment'"),
    ],
)
def test_each_rule_catches_the_preset_that_breaks_it(broken, problem):
    assert any(problem in found for found in fairness_problems(broken)), fairness_problems(broken)


def test_the_control_matches_a_row_that_spells_out_the_default_views():
    explicit = {"name": "DGE", "algorithm": "DGE", "hparams": {"dge_num_views": 3, "dge_augment": "randaugment"}}
    assert fairness_problems(preset(explicit)) == []


def test_a_learning_rate_search_may_vary_what_it_tunes():
    search = preset({"name": "Baseline (lr 0.1)", "algorithm": "GradAvg",
                     "hparams": {"dge_num_views": 1, "dge_augment": "none", "lr": 0.1}}, tunes=["lr"])
    assert fairness_problems(search) == []


def test_targets_reach_every_variant_as_a_hyperparameter():
    parsed = preset(sources=[0, 1], targets=[5])
    assert parsed.sources == (0, 1) and parsed.targets == (5,)
    merged = json.loads(parsed.variants[0].hparams_json(parsed.hparams, {}, parsed.targets))
    assert merged[TARGETS_HPARAM] == [5]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sources": [0, 0]}, "sources = [0, 0] is not allowed"),
        ({"targets": [-1]}, "targets = [-1] is not allowed"),
        ({"sources": [1], "targets": [1, 2]}, "targets = [1, 2] is not allowed; allowed: environments that are not"),
        ({"modes": ["mdg"], "targets": [1]}, "targets = [1] is not allowed; allowed: null unless modes"),
        ({"tunes": ["alpha"]}, "tunes = ['alpha'] is not allowed"),
        ({"checkpoint_freq": 0}, "checkpoint_freq = 0 is not allowed"),
    ],
)
def test_bad_sources_targets_and_tunes_are_refused(changes, message):
    with pytest.raises(PresetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        preset(**changes)


#: The MixStyle authors' stages (mixstyle-release imcls/README.md): resnet18_ms_l12 on
#: OfficeHome, resnet18_ms_l123 on PACS; the PACS setting where they ran none.
AUTHORS_MIXSTYLE_LAYERS = {"OfficeHome": [1, 2], "PACS": [1, 2, 3]}


@pytest.mark.parametrize("path", PRESETS, ids=[path.stem for path in PRESETS])
def test_mixstyle_rows_run_the_authors_stages_on_each_dataset(path):
    from domainbed_dge.experiments.presets import _setting

    loaded = load_preset(str(path))
    for variant in (v for v in loaded.variants if v.algorithm == "MixStyle"):
        for dataset in loaded.datasets:
            layers = _setting(loaded, variant, "mixstyle_layers", dataset)
            assert layers == AUTHORS_MIXSTYLE_LAYERS.get(dataset, [1, 2, 3]), (variant.name, dataset)


def test_the_officehome_preset_runs_mixstyle_after_layers_1_and_2():
    from domainbed_dge.experiments.presets import _setting

    officehome = load_preset(str(Path(__file__).resolve().parents[2] / "sweeps" / "sdg_officehome.json"))
    (mixstyle,) = [v for v in officehome.variants if v.algorithm == "MixStyle"]
    assert _setting(officehome, mixstyle, "mixstyle_layers", "OfficeHome") == [1, 2]
