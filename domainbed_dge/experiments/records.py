"""SDG records from DomainBed's results.jsonl files: loading and checking.

A record is one line of a job's ``results.jsonl`` (one checkpoint). It is SDG when its
``args.test_envs`` are every environment but one, the source. Records are grouped into
runs (one per results file and job). A run's method is the record's
``hparams.sweep_variant`` when set (see ``domainbed_dge.experiments.presets``), else
its algorithm's label in the method registry (``plugin.methods``), else its
algorithm. Its targets are the record's ``hparams.sweep_targets`` when set (a
preset's ``targets``), else every environment but the source.

Lines that are not JSON objects, or lack what a record needs (a job killed mid-write
leaves a truncated last line), are skipped with a warning naming file and line.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from domainbed_dge.experiments.presets import TARGETS_HPARAM, VARIANT_HPARAM, VIEWS_AS_DOMAINS
from domainbed_dge.plugin.hparams import is_number
from domainbed_dge.plugin.methods import BY_NAME


#: The ``--finished_only`` option's help, shared by the commands that read sweeps.
FINISHED_ONLY_HELP = ("read only the jobs that wrote DomainBed's `done` marker (default: off, as DomainBed: "
                      "running and stopped jobs count with the checkpoints they have)")


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


@dataclass
class Loaded:
    """What ``load_runs`` found: SDG runs, and counts of what it left out."""

    runs: list
    files: int = 0
    records: int = 0
    skipped_lines: int = 0
    other_records: int = 0
    #: Results files without DomainBed's ``done`` marker beside them (jobs still
    #: running, or stopped): read, or left out with ``finished_only``.
    unfinished_files: int = 0
    finished_only: bool = False


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
    if not is_number(record.get("step")):
        raise BadRecord("'step' is missing or not a number")
    num_environments = 0
    while f"env{num_environments}_in_acc" in record:
        num_environments += 1
    if num_environments < 2:
        raise BadRecord("fewer than two env<i>_in_acc accuracies")
    for env in range(num_environments):
        for split in ("in", "out"):
            if not is_number(record.get(f"env{env}_{split}_acc")):
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


def label_of(algorithm: str, hparams: dict | None = None) -> str:
    """The row label of an unlabelled run of ``algorithm`` with ``hparams``: the
    method's label, or DomainBed's algorithm's name, followed by
    :data:`VIEWS_AS_DOMAINS` when ``dge_num_views`` made the views its domains."""
    if algorithm in BY_NAME:
        return BY_NAME[algorithm].label
    views = (hparams or {}).get("dge_num_views", 0)
    return f"{algorithm} {VIEWS_AS_DOMAINS}" if is_number(views) and views >= 2 else algorithm


def results_files(input_dir: str) -> list[str]:
    """Every results.jsonl under ``input_dir`` (any depth), in a stable order."""
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        if "results.jsonl" in files:
            found.append(os.path.join(root, "results.jsonl"))
    return found


def load_runs(input_dir: str, warn: Callable[[str], None] = warn_to_stderr, max_step: int | None = None,
              finished_only: bool = False) -> Loaded:
    """SDG runs from every results.jsonl under ``input_dir``, keeping the checkpoints up
    to ``max_step`` (all when ``None``, as if the runs had stopped there), and only the
    jobs that wrote ``done`` when ``finished_only``; bad lines are skipped with
    ``warn("<file> line <n>: <why>")``."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"--input_dir {input_dir} is not a directory")
    loaded = Loaded(runs=[], finished_only=finished_only)
    runs: dict[tuple, Run] = {}
    for path in results_files(input_dir):
        if not os.path.exists(os.path.join(os.path.dirname(path), "done")):
            loaded.unfinished_files += 1
            if finished_only:
                continue
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
                if max_step is not None and record["step"] > max_step:
                    continue
                loaded.records += 1
                args = record["args"]
                sources = set(range(num_environments)) - set(args["test_envs"])
                if len(sources) != 1:
                    loaded.other_records += 1
                    continue
                hparams = record.get("hparams", {})
                method = hparams.get(VARIANT_HPARAM) or label_of(args["algorithm"], hparams)
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
