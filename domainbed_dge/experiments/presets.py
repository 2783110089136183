"""Sweep presets: one JSON file per experiment of the paper (see ``sweeps/``).

    python -m domainbed_dge.sweep launch --preset sweeps/sdg_pacs.json \\
        --data_dir D --output_dir O --command_launcher local

A preset is a JSON object with these keys:

``description`` (string), ``paper`` (string, optional: the table or figure)
    what the experiment is.
``modes`` (list of ``"sdg"``, ``"mdg"``)
    SDG: one job per source environment; MDG: DomainBed's test-environment choice.
``datasets`` (list of DomainBed dataset names), ``n_trials``, ``n_hparams_from``,
``n_hparams`` (integers), ``steps`` (integer or null: the dataset's default)
    as the sweep options of the same names.
``holdout_fraction`` (number, default 0.2), ``single_test_envs`` (boolean, default
false; MDG only), ``checkpoint_freq`` (integer or null, default null: the dataset's)
    as the sweep options of the same names.
``sources``, ``targets`` (lists of environment indices, default null: all; SDG only)
    ``sources`` limits the jobs to those source environments; ``targets`` limits the
    tables to those target environments (every environment but the source is still
    a test environment, so none is trained on). The targets reach the results as the
    hyperparameter ``"sweep_targets"``.
``tunes`` (list of names from ``SHARED_SETTINGS``, default ``[]``)
    the shared settings this preset's variants vary on purpose (a learning-rate
    search); see :func:`fairness_problems`.
``hparams`` (object, default ``{}``)
    hyperparameters every variant gets.
``variants`` (list of objects ``{"name", "algorithm", "hparams"}``)
    the rows of the results: each is an algorithm with its own hyperparameters
    (``hparams`` optional, applied over the preset's).

How a variant's name reaches the results: a variant whose name differs from its
algorithm's (an ablation such as ``"DGE (adjust off)"``) also gets the hyperparameter
``"sweep_variant": name``. train.py records it with the other hyperparameters in
every line of ``results.jsonl``, algorithms ignore it, and ``collect_results`` and
``plots`` use it as the row's label. A variant named as its algorithm gets no label
key, so its jobs are exactly those of a plain sweep with the same ``--hparams``.
A hand-written sweep can label its runs the same way: ``--hparams
'{"sweep_variant": "DGE (K=4)", "dge_num_views": 4}'``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domainbed_dge.plugin.hparams import LABELS, is_int, is_number
from domainbed_dge.plugin.methods import NAMES, hparams_of

#: The hyperparameters that carry a variant's name and a preset's target environments
#: into results.jsonl (every algorithm of the plugin accepts them).
VARIANT_HPARAM, TARGETS_HPARAM = LABELS
#: SDG: one job per source environment; MDG: DomainBed's test-environment choice.
MODES = ("sdg", "mdg")

#: What every method of a fair comparison shares (DESIGN 1b): set in the preset's
#: ``hparams`` and overridden by no variant, unless the preset ``tunes`` it.
SHARED_SETTINGS = ("dge_optimizer", "lr", "dge_momentum", "batch_size", "weight_decay")
#: Marks a row of one of DomainBed's own algorithms run as DomainBed runs it (Adam, no
#: views), an extra reference outside the shared settings.
REFERENCE_MARK = "reference"
#: Marks a row of one of the plugin's methods run with its authors' own settings rather
#: than the shared ones, an extra reference outside the shared settings.
AUTHORS_SETTINGS_MARK = "(authors' settings)"
#: The label's suffix of a DomainBed algorithm trained on the views as its domains.
VIEWS_AS_DOMAINS = "(views as domains)"
BASELINE = "Baseline"
STEP_MATCHED_CONTROL = "GradAvg x K"
#: What the step-matched control must share with every DGE row: the same K views.
STEP_MATCHED_KEYS = ("dge_num_views", "dge_augment")

_REQUIRED = ("description", "modes", "datasets", "n_trials", "n_hparams_from", "n_hparams", "steps", "variants")
_OPTIONAL = {"paper": "", "holdout_fraction": 0.2, "single_test_envs": False, "sources": None, "targets": None,
             "checkpoint_freq": None, "tunes": [], "hparams": {}}
_VARIANT_KEYS = ("name", "algorithm", "hparams")


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class PresetVariant:
    name: str
    algorithm: str
    hparams: dict

    def hparams_json(self, common: dict, overrides: dict, targets: list[int] | None = None) -> str | None:
        """The variant's ``--hparams``: the preset's, then ``overrides`` (the command
        line's), then the variant's own, then its label and the preset's targets;
        ``None`` when empty."""
        merged = {**common, **overrides, **self.hparams}
        if self.name != self.algorithm:
            merged[VARIANT_HPARAM] = self.name
        if targets is not None:
            merged[TARGETS_HPARAM] = list(targets)
        return json.dumps(merged, sort_keys=True) if merged else None


@dataclass(frozen=True)
class Preset:
    path: str
    description: str
    paper: str
    modes: tuple[str, ...]
    datasets: tuple[str, ...]
    n_trials: int
    n_hparams_from: int
    n_hparams: int
    steps: int | None
    holdout_fraction: float
    single_test_envs: bool
    sources: tuple[int, ...] | None
    targets: tuple[int, ...] | None
    checkpoint_freq: int | None
    tunes: tuple[str, ...]
    hparams: dict
    variants: tuple[PresetVariant, ...]


def load_preset(path: str) -> Preset:
    """Read and check a preset file; raise :class:`PresetError` naming what is wrong."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except OSError as error:
        raise PresetError(f"cannot read preset {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise PresetError(f"preset {path} is not valid JSON: {error}") from error
    return parse_preset(data, path)


def parse_preset(data: Any, path: str = "<preset>") -> Preset:
    def fail(message: str) -> PresetError:
        return PresetError(f"preset {path}: {message}")

    if not isinstance(data, dict):
        raise fail(f"must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_REQUIRED + tuple(_OPTIONAL))}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise fail(f"missing key(s) {', '.join(missing)}")
    values = {**_OPTIONAL, **data}

    def check(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise fail(f"{key} = {values[key]!r} is not allowed; allowed: {allowed}")

    def is_string_list(value) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(item, str) and item for item in value)

    check("description", isinstance(values["description"], str) and values["description"], "a non-empty string")
    check("paper", isinstance(values["paper"], str), "a string")
    check("modes", is_string_list(values["modes"]) and set(values["modes"]) <= set(MODES)
          and len(set(values["modes"])) == len(values["modes"]), f"a list of distinct modes from {', '.join(MODES)}")
    check("datasets", is_string_list(values["datasets"]), "a non-empty list of DomainBed dataset names")
    check("n_trials", is_int(values["n_trials"], 1), "an integer >= 1")
    check("n_hparams_from", is_int(values["n_hparams_from"], 0), "an integer >= 0")
    check("n_hparams", is_int(values["n_hparams"], values["n_hparams_from"] + 1)
          if is_int(values["n_hparams_from"], 0) else False, "an integer > n_hparams_from")
    check("steps", values["steps"] is None or is_int(values["steps"], 1), "an integer >= 1 or null")
    check("checkpoint_freq", values["checkpoint_freq"] is None or is_int(values["checkpoint_freq"], 1),
          "an integer >= 1 or null")
    check("holdout_fraction", is_number(values["holdout_fraction"]) and 0 < values["holdout_fraction"] < 1,
          "a number in (0, 1)")
    check("single_test_envs", isinstance(values["single_test_envs"], bool), "true or false")
    check("single_test_envs", not values["single_test_envs"] or "mdg" in values["modes"],
          "true only when modes include mdg")
    for key in ("sources", "targets"):
        check(key, values[key] is None or (isinstance(values[key], list) and bool(values[key])
              and all(is_int(env, 0) for env in values[key]) and len(set(values[key])) == len(values[key])),
              "null or a non-empty list of distinct environment indices (integers >= 0)")
        check(key, values[key] is None or values["modes"] == ["sdg"], "null unless modes is [\"sdg\"]")
    check("targets", not set(values["targets"] or ()) & set(values["sources"] or ()),
          "environments that are not sources")
    check("tunes", isinstance(values["tunes"], list) and set(values["tunes"]) <= set(SHARED_SETTINGS),
          f"a list of names from {', '.join(SHARED_SETTINGS)}")
    check("hparams", isinstance(values["hparams"], dict), "a JSON object")
    for key in (VARIANT_HPARAM, TARGETS_HPARAM):
        check("hparams", key not in values["hparams"], f"an object without {key!r} (the preset sets it)")
    check("variants", isinstance(values["variants"], list) and bool(values["variants"]), "a non-empty list")
    variants = tuple(_parse_variant(item, index, fail) for index, item in enumerate(values["variants"]))
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise fail(f"variant names must be distinct; repeated: {', '.join(duplicates)}")
    return Preset(
        path=path,
        description=values["description"],
        paper=values["paper"],
        modes=tuple(values["modes"]),
        datasets=tuple(values["datasets"]),
        n_trials=values["n_trials"],
        n_hparams_from=values["n_hparams_from"],
        n_hparams=values["n_hparams"],
        steps=values["steps"],
        holdout_fraction=float(values["holdout_fraction"]),
        single_test_envs=values["single_test_envs"],
        sources=None if values["sources"] is None else tuple(values["sources"]),
        targets=None if values["targets"] is None else tuple(values["targets"]),
        checkpoint_freq=values["checkpoint_freq"],
        tunes=tuple(values["tunes"]),
        hparams=values["hparams"],
        variants=variants,
    )


def _parse_variant(item: Any, index: int, fail) -> PresetVariant:
    where = f"variants[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be an object with keys {', '.join(_VARIANT_KEYS)}")
    unknown = sorted(set(item) - set(_VARIANT_KEYS))
    if unknown:
        raise fail(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_VARIANT_KEYS)}")
    for key in ("name", "algorithm"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise fail(f"{where}.{key} = {item.get(key)!r} is not allowed; allowed: a non-empty string")
    hparams = item.get("hparams", {})
    if not isinstance(hparams, dict):
        raise fail(f"{where}.hparams = {hparams!r} is not allowed; allowed: a JSON object")
    for key in (VARIANT_HPARAM, TARGETS_HPARAM):
        if key in hparams:
            raise fail(f"{where}.hparams sets {key!r}, which the preset sets")
    return PresetVariant(item["name"], item["algorithm"], hparams)


def fairness_problems(preset: Preset) -> list[str]:
    """How ``preset`` breaks the rules of a like-with-like comparison (empty: none).

    * Every variant but the references sets each of ``SHARED_SETTINGS`` to the same
      value, from the preset's ``hparams`` (unless the preset ``tunes`` it): the
      plugin's methods and DomainBed's own algorithms alike (``dge_optimizer``). The
      references are DomainBed's rows that say ``reference`` and the plugin's rows that
      say ``(authors' settings)`` (e.g. SAGM with its authors' optimiser and network).
    * A row of DomainBed's algorithm whose name says ``reference`` runs it as DomainBed
      does: Adam (``dge_optimizer`` ``adam``) and no views (``dge_num_views`` 0).
    * A row of DomainBed's algorithm on views as its domains (``dge_num_views`` >= 2)
      says so in its name (``VIEWS_AS_DOMAINS``), and only such a row does; a preset
      with MDG jobs has none (DomainBed's algorithms refuse views in MDG).
    * ``Baseline`` is vanilla training: GradAvg with one clean view; ``Baseline + X``
      is GradAvg with one view augmented with X (Table 9). In a preset of MDG jobs
      only, ``Baseline`` may instead be DomainBed's ERM under the shared optimiser
      (vanilla training on the environments' batch, Table 5): GradAvg would there
      average the environments' gradients, as the ``GradAvg`` row does.
    * ``GradAvg x K`` is the step-matched control: DGE with adjustment and
      reweighting off and sequential updates (K steps of the mean gradient), on the
      same K views (``STEP_MATCHED_KEYS``) as every DGE row.
    """
    problems = []
    compared = [variant for variant in preset.variants if not is_reference(variant)]
    for name in SHARED_SETTINGS:
        if name in preset.tunes:
            continue
        if name not in preset.hparams:
            problems.append(f"hparams do not set {name!r}, which every method must share")
        for variant in compared:
            if name in variant.hparams and variant.hparams[name] != preset.hparams.get(name):
                problems.append(f"variant {variant.name!r} sets {name} = {variant.hparams[name]!r}, "
                                f"not the shared {preset.hparams.get(name)!r}")
    for variant in preset.variants:
        if variant.algorithm not in NAMES:
            problems += _domainbed_row_problems(preset, variant)
        if variant.name.startswith(BASELINE):
            problems += _baseline_problems(preset, variant)
        if variant.name == STEP_MATCHED_CONTROL:
            problems += _step_matched_control_problems(preset, variant)
    problems += _step_matching_problems(preset)
    return problems


def is_reference(variant: PresetVariant) -> bool:
    """An extra reference row, outside the shared settings: one of DomainBed's algorithms
    as DomainBed runs it, or one of the plugin's methods with its authors' settings."""
    if variant.algorithm in NAMES:
        return AUTHORS_SETTINGS_MARK in variant.name
    return REFERENCE_MARK in variant.name


def _domainbed_row_problems(preset: Preset, variant: PresetVariant) -> list[str]:
    """How a row of DomainBed's own algorithm breaks its rules, on any of the preset's
    datasets: a reference with the plugin's optimiser or views, views in MDG, or views
    without the label that says so (or the label without them)."""
    problems = []
    for dataset in preset.datasets:
        optimizer, views = (_setting(preset, variant, key, dataset) for key in ("dge_optimizer", "dge_num_views"))
        if REFERENCE_MARK in variant.name:
            if (optimizer, views) != ("adam", 0):
                problems.append(f"variant {variant.name!r} is a {REFERENCE_MARK} row of DomainBed's {variant.algorithm}: "
                                f"it must run as DomainBed does, dge_optimizer 'adam' and dge_num_views 0, "
                                f"has {optimizer!r} and {views!r}")
        elif views and "mdg" in preset.modes:
            problems.append(f"variant {variant.name!r} has dge_num_views = {views!r}, which DomainBed's "
                            f"{variant.algorithm} refuses in MDG (views are the domains in SDG only)")
        elif bool(views) != (VIEWS_AS_DOMAINS in variant.name):
            problems.append(f"variant {variant.name!r} has dge_num_views = {views!r}: a row of DomainBed's "
                            f"{variant.algorithm} says {VIEWS_AS_DOMAINS!r} in its name exactly when it trains on views")
    return list(dict.fromkeys(problems))


def _baseline_problems(preset: Preset, variant: PresetVariant) -> list[str]:
    """How a ``Baseline`` row is not GradAvg on one clean view, or a ``Baseline + X``
    row not GradAvg on one augmented view, on any of the preset's datasets."""
    if variant.algorithm == "ERM" and variant.name == BASELINE and preset.modes == ("mdg",):
        return []
    if variant.algorithm != "GradAvg":
        return [f"variant {variant.name!r} must be GradAvg with dge_num_views 1"]
    augmented = variant.name != BASELINE and not variant.name.startswith(f"{BASELINE} (")
    problems = []
    for dataset in preset.datasets:
        augment = _setting(preset, variant, "dge_augment", dataset)
        if _setting(preset, variant, "dge_num_views", dataset) != 1:
            problems.append(f"variant {variant.name!r} must be GradAvg with dge_num_views 1")
        elif augmented == (augment == "none"):
            wanted = "an augmentation (Baseline + X)" if augmented else "dge_augment 'none' (vanilla training)"
            problems.append(f"variant {variant.name!r} must have {wanted}, has {augment!r}")
    return list(dict.fromkeys(problems))


def _step_matched_control_problems(preset: Preset, variant: PresetVariant) -> list[str]:
    """Whether the ``GradAvg x K`` row is DGE with adjustment and reweighting off and
    sequential updates, on each of the preset's datasets."""
    wanted = {"dge_adjust": False, "dge_reweight": False, "dge_update": "sequential"}
    if variant.algorithm == "DGE" and all(
            _setting(preset, variant, key, dataset) == value
            for dataset in preset.datasets for key, value in wanted.items()):
        return []
    return [f"variant {variant.name!r} must be DGE with dge_adjust and dge_reweight false, sequential updates"]


def _step_matching_problems(preset: Preset) -> list[str]:
    """Each DGE row whose K or augmentation differs from the step-matched control's,
    on each of the preset's datasets, with unset values at the algorithm's default."""
    control = next((variant for variant in preset.variants if variant.name == STEP_MATCHED_CONTROL), None)
    if control is None:
        return []
    problems = []
    for variant in preset.variants:
        if variant.algorithm != "DGE" or variant is control:
            continue
        for dataset in preset.datasets:
            for key in STEP_MATCHED_KEYS:
                value, control_value = (_setting(preset, row, key, dataset) for row in (variant, control))
                if value != control_value:
                    problems.append(f"variant {variant.name!r} has {key} = {value!r} but {STEP_MATCHED_CONTROL!r} "
                                    f"has {control_value!r} on {dataset}: the control must take the same views")
    return problems


def _setting(preset: Preset, variant: PresetVariant, key: str, dataset: str) -> Any:
    """``key`` as ``variant`` runs it on ``dataset``: its own value, the preset's, or the
    algorithm's default."""
    merged = {**preset.hparams, **variant.hparams}
    if key in merged:
        return merged[key]
    return next(hparam.default(dataset) for hparam in hparams_of(variant.algorithm) if hparam.name == key)
