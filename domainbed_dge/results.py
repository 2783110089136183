"""SDG results from DomainBed's results.jsonl files: loading, model selection, cells.

A record is one line of a job's ``results.jsonl`` (one checkpoint). It is SDG when its
``args.test_envs`` are every environment but one, the source. Records are grouped into
runs (one per results file and job), runs into cells: (dataset, method, source,
trial). The method is the record's ``hparams.sweep_variant`` when set (see
``domainbed_dge.presets``), else its algorithm. The targets are the record's
``hparams.sweep_targets`` when set (a preset's ``targets``), else every environment
but the source.

Model selection, per cell, as DomainBed's ``model_selection`` does per test
environment:

- ``source validation``: each run's checkpoint with the best accuracy on the source's
  ``out`` split; the run whose best checkpoint scores highest. The analogue of
  DomainBed's training-domain validation, using no target data.
- ``oracle``: each run's last checkpoint, scored by its mean accuracy on the targets'
  ``out`` splits; the best-scoring run. As DomainBed's test-domain oracle, which
  does not stop early.

A selection reports the chosen checkpoint's accuracy on the targets' ``in`` splits:
their mean, and each target's. Ties go to the earlier checkpoint and to the run that
sorts first by (hparams_seed, path).

Lines that are not JSON objects, or lack what a record needs (a job killed mid-write
leaves a truncated last line), are skipped with a warning naming file and line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from domainbed_dge.presets import TARGETS_HPARAM, VARIANT_HPARAM

SOURCE_VALIDATION = "source validation"
ORACLE = "oracle"
SELECTION_METHODS = (SOURCE_VALIDATION, ORACLE)
#: Rows come in this order, then other algorithms alphabetically; a method's labelled
#: variants follow it, alphabetically.
ALGORITHM_ORDER = ("ERM", "DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad")


class BadRecord(ValueError):
    """A results line that is not a usable record."""


def warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Run:
    """The checkpoints (records, by step) of one SDG job."""

    path: str
    dataset: str
    method: str
    algorithm: str
    source: int
    num_environments: int
    trial_seed: int
    hparams_seed: int
    declared_targets: tuple[int, ...] | None = None
    records: list = field(default_factory=list)

    @property
    def targets(self) -> list[int]:
        candidates = range(self.num_environments) if self.declared_targets is None else self.declared_targets
        return [env for env in candidates if env != self.source]

    def target_accuracy(self, record: dict, split: str = "in") -> float:
        return sum(record[f"env{env}_{split}_acc"] for env in self.targets) / len(self.targets)


@dataclass(frozen=True)
class Selection:
    """The checkpoint a selection method picked for one (dataset, method, source, trial)."""

    run: Run
    record: dict
    score: float

    @property
    def accuracy(self) -> float:
        """Mean accuracy over the targets' ``in`` splits."""
        return self.run.target_accuracy(self.record)

    def target_accuracies(self) -> dict[int, float]:
        return {env: self.record[f"env{env}_in_acc"] for env in self.run.targets}


@dataclass
class Loaded:
    """What ``load_runs`` found: SDG runs, and counts of what it left out."""

    runs: list
    files: int = 0
    records: int = 0
    skipped_lines: int = 0
    other_records: int = 0


def check_record(record) -> int:
    """Raise :class:`BadRecord` unless ``record`` has what SDG tables need; return its
    number of environments."""
    if not isinstance(record, dict):
        raise BadRecord(f"not a JSON object but {type(record).__name__}")
    args = record.get("args")
    if not isinstance(args, dict):
        raise BadRecord("no 'args' object")
    expected = (("dataset", str), ("algorithm", str), ("test_envs", list), ("trial_seed", int), ("hparams_seed", int))
    for key, kind in expected:
        if not isinstance(args.get(key), kind):
            raise BadRecord(f"args.{key} is missing or not a {kind.__name__}")
    if not _is_number(record.get("step")):
        raise BadRecord("'step' is missing or not a number")
    num_environments = 0
    while f"env{num_environments}_in_acc" in record:
        num_environments += 1
    if num_environments < 2:
        raise BadRecord("fewer than two env<i>_in_acc accuracies")
    for env in range(num_environments):
        for split in ("in", "out"):
            if not _is_number(record.get(f"env{env}_{split}_acc")):
                raise BadRecord(f"env{env}_{split}_acc is missing or not a number")
    if not all(isinstance(env, int) and 0 <= env < num_environments for env in args["test_envs"]):
        raise BadRecord(f"args.test_envs {args['test_envs']} are not environments 0..{num_environments - 1}")
    hparams = record.get("hparams", {})
    if not isinstance(hparams, dict):
        raise BadRecord("'hparams' is not an object")
    targets = hparams.get(TARGETS_HPARAM)
    if targets is not None and not (isinstance(targets, list) and targets and all(
            isinstance(env, int) and env in args["test_envs"] for env in targets)):
        raise BadRecord(f"hparams.{TARGETS_HPARAM} {targets!r} is not a non-empty list of test environments")
    return num_environments


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def results_files(input_dir: str) -> list[str]:
    """Every results.jsonl under ``input_dir`` (any depth), in a stable order."""
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        if "results.jsonl" in files:
            found.append(os.path.join(root, "results.jsonl"))
    return found


def load_runs(input_dir: str, warn: Callable[[str], None] = warn_to_stderr) -> Loaded:
    """SDG runs from every results.jsonl under ``input_dir``; bad lines are skipped
    with ``warn("<file> line <n>: <why>")``."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"--input_dir {input_dir} is not a directory")
    loaded = Loaded(runs=[])
    runs: dict[tuple, Run] = {}
    for path in results_files(input_dir):
        loaded.files += 1
        with open(path, errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    num_environments = check_record(record)
                except (json.JSONDecodeError, BadRecord) as error:
                    loaded.skipped_lines += 1
                    warn(f"{path} line {number}: skipped, {error}")
                    continue
                loaded.records += 1
                args = record["args"]
                sources = set(range(num_environments)) - set(args["test_envs"])
                if len(sources) != 1:
                    loaded.other_records += 1
                    continue
                method = record.get("hparams", {}).get(VARIANT_HPARAM) or args["algorithm"]
                targets = record.get("hparams", {}).get(TARGETS_HPARAM)
                targets = None if targets is None else tuple(targets)
                key = (path, args["dataset"], method, args["algorithm"], min(sources), num_environments,
                       args["trial_seed"], args["hparams_seed"], targets)
                if key not in runs:
                    runs[key] = Run(path, args["dataset"], str(method), args["algorithm"], min(sources),
                                    num_environments, args["trial_seed"], args["hparams_seed"], targets)
                runs[key].records.append(record)
    for run in runs.values():
        run.records.sort(key=lambda record: record["step"])
    loaded.runs = list(runs.values())
    return loaded


def _best_checkpoint(run: Run, method: str) -> tuple[float, dict]:
    if method == SOURCE_VALIDATION:
        scores = [(record[f"env{run.source}_out_acc"], record) for record in run.records]
        best = max(score for score, _ in scores)
        return next((score, record) for score, record in scores if score == best)
    last = run.records[-1]
    return run.target_accuracy(last, "out"), last


def select(runs: Iterable[Run], method: str) -> dict[tuple, Selection]:
    """``{(dataset, method, source, trial_seed): Selection}`` for a selection method."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"selection method {method!r} is not allowed; allowed: {', '.join(SELECTION_METHODS)}")
    cells: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        cells[(run.dataset, run.method, run.source, run.trial_seed)].append(run)
    selections = {}
    for cell, candidates in cells.items():
        candidates.sort(key=lambda run: (run.hparams_seed, run.path))
        scored = [(*_best_checkpoint(run, method), run) for run in candidates]
        best = max(score for score, _, _ in scored)
        score, record, run = next(item for item in scored if item[0] == best)
        selections[cell] = Selection(run, record, score)
    return selections


def method_order(methods: Iterable[str], algorithm_of: dict[str, str]) -> list[str]:
    """Methods ordered by their algorithm (``ALGORITHM_ORDER`` first), unlabelled first."""

    def key(method: str):
        algorithm = algorithm_of[method]
        rank = ALGORITHM_ORDER.index(algorithm) if algorithm in ALGORITHM_ORDER else len(ALGORITHM_ORDER)
        return rank, algorithm, method != algorithm, method

    return sorted(set(methods), key=key)


def environment_names(dataset: str, num_environments: int) -> list[str]:
    """DomainBed's names for the dataset's environments; ``env<i>`` where DomainBed
    does not know the dataset or counts its environments differently."""
    try:
        from domainbed import datasets

        names = list(datasets.get_dataset_class(dataset).ENVIRONMENTS)
    except (ImportError, NotImplementedError):
        names = []
    return names if len(names) == num_environments else [f"env{env}" for env in range(num_environments)]


def dataset_order(names: Iterable[str]) -> list[str]:
    """DomainBed's order of datasets, then unknown ones alphabetically."""
    try:
        from domainbed import datasets

        known = list(datasets.DATASETS)
    except ImportError:
        known = []
    return sorted(set(names), key=lambda name: (known.index(name) if name in known else len(known), name))


@dataclass(frozen=True)
class DatasetResults:
    """One dataset's selections, arranged for tables and plots."""

    dataset: str
    environments: list
    methods: list
    selections: dict
    #: The source environments some run trained on, in order.
    sources: list

    @classmethod
    def build(cls, runs: list[Run], selections: dict[tuple, Selection]) -> list[DatasetResults]:
        """One per dataset that has runs, in DomainBed's dataset order."""
        built = []
        for dataset in dataset_order(run.dataset for run in runs):
            dataset_runs = [run for run in runs if run.dataset == dataset]
            algorithm_of = {run.method: run.algorithm for run in dataset_runs}
            num_environments = max(run.num_environments for run in dataset_runs)
            built.append(cls(
                dataset=dataset,
                environments=environment_names(dataset, num_environments),
                methods=method_order(algorithm_of, algorithm_of),
                selections={cell: chosen for cell, chosen in selections.items() if cell[0] == dataset},
                sources=sorted({run.source for run in dataset_runs}),
            ))
        return built

    def trials(self, method: str, source: int) -> list[Selection]:
        """The selections of every trial with ``source`` as the source, by trial seed."""
        chosen = [(cell[3], selection) for cell, selection in self.selections.items()
                  if cell[1] == method and cell[2] == source]
        return [selection for _, selection in sorted(chosen, key=lambda item: item[0])]

    def accuracies(self, method: str, source: int) -> list[float]:
        """Target accuracy (mean over targets) of each trial."""
        return [selection.accuracy for selection in self.trials(method, source)]

    def target_matrix(self, method: str) -> list[list[float | None]]:
        """``[source][target]``: accuracy on the target's ``in`` split, mean over trials;
        ``None`` on the diagonal, for environments that are not targets, and where no
        trial ran."""
        size = len(self.environments)
        matrix: list[list[float | None]] = [[None] * size for _ in range(size)]
        for source in range(size):
            trials = self.trials(method, source)
            for target in range(size):
                if trials and all(target in t.target_accuracies() for t in trials):
                    matrix[source][target] = sum(t.target_accuracies()[target] for t in trials) / len(trials)
        return matrix
