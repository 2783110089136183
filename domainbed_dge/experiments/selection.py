"""Model selection for SDG, per (dataset, method, source, trial) cell, as DomainBed's
``model_selection`` does per test environment:

- ``source validation``: each run's checkpoint with the best accuracy on the source's
  ``out`` split; the run whose best checkpoint scores highest. The analogue of
  DomainBed's training-domain validation, using no target data.
- ``oracle``: each run's last checkpoint, scored by its mean accuracy on the targets'
  ``out`` splits; the best-scoring run. As DomainBed's test-domain oracle, which
  does not stop early.

A selection reports the chosen checkpoint's accuracy on the targets' ``in`` splits:
their mean, and each target's. Ties go to the earlier checkpoint and to the run that
sorts first by (hparams_seed, path).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from domainbed_dge.experiments.records import Run

SOURCE_VALIDATION = "source validation"
ORACLE = "oracle"
SELECTION_METHODS = (SOURCE_VALIDATION, ORACLE)


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
