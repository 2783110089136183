"""Tables over training: each method's numbers at every checkpoint, for the runs a
selection chose.

The learning curves (source validation accuracy, training loss), DGE's equilibrium
(the mean of its weights w_k and its diagnostics) and every other number a method's
update logs (its own diagnostics: GSAM's perturbation norm, RandConv's share of kept
images, ...), each the mean over the selected runs of every source and trial.
"""

from __future__ import annotations

import re
import statistics
from typing import Callable, Sequence

from domainbed_dge.experiments.dataset_results import MISSING, DatasetResults
from domainbed_dge.experiments.records import Run

#: DGE's equilibrium weights as train.py logs them, one key per domain k.
WEIGHT_KEY = re.compile(r"^dge_weight_(\d+)$")
#: The over-training table's rows per method: the mean of its weights, then these.
MEAN_WEIGHT = "mean w_k"
TRAINING_DIAGNOSTICS = ("dge_net_vs_gradavg", "dge_adjusted_pairs")
#: What train.py logs for every algorithm (besides the ``env*_acc`` accuracies): the
#: other numbers of a record are the method's own diagnostics.
DOMAINBED_KEYS = frozenset({"step", "epoch", "loss", "mem_gb", "step_time"})
#: The learning-curve table's rows per method.
SOURCE_VALIDATION_CURVE = "source validation accuracy (%)"
TRAINING_LOSS = "training loss"


def logged_value(record: dict, quantity: str) -> float | None:
    """``quantity`` at one checkpoint: a logged key, or ``MEAN_WEIGHT`` over the weights."""
    if quantity != MEAN_WEIGHT:
        return record.get(quantity)
    weights = [value for key, value in record.items() if WEIGHT_KEY.match(key)]
    return statistics.fmean(weights) if weights else None


#: A quantity read off one run's checkpoint record (``None``: not logged there).
Measure = Callable[[Run, dict], float | None]


def by_checkpoint_table(runs_of: dict[str, list[Run]], methods: list[str],
                        quantities_of: Callable[[str], Sequence[tuple[str, Measure, str]]],
                        ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of each method's ``quantities_of(method)`` (label, measure, number
    format) over training: per method of ``methods`` in ``runs_of``, the mean over its
    runs at each checkpoint step that every run of ``runs_of`` logged; ``MISSING`` where
    no run logged it."""
    steps = sorted(set.intersection(*({record["step"] for record in run.records}
                                      for runs in runs_of.values() for run in runs)))
    header = ["Method", "quantity", *(str(step) for step in steps)]
    rows = []
    for method in (method for method in methods if method in runs_of):
        by_step = [(run, {record["step"]: record for record in run.records}) for run in runs_of[method]]
        for label, measure, number_format in quantities_of(method):
            cells = []
            for step in steps:
                values = [value for run, records in by_step if (value := measure(run, records[step])) is not None]
                cells.append(format(statistics.fmean(values), number_format) if values else MISSING)
            rows.append([method, label, *cells])
    return header, rows


def selected_runs(results: DatasetResults) -> dict[str, list[Run]]:
    """Each method's runs that a selection chose (every source and trial)."""
    runs_of: dict[str, list[Run]] = {}
    for selection in results.selections.values():
        runs_of.setdefault(selection.run.method, []).append(selection.run)
    return runs_of


def training_table(results: DatasetResults) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of DGE's equilibrium over training: per method that logs
    weights, the mean over its selected runs (every source and trial) of
    ``MEAN_WEIGHT`` and ``TRAINING_DIAGNOSTICS`` at each checkpoint all of them
    logged; ``None`` when no method logs weights."""
    runs_of = {method: runs for method, runs in selected_runs(results).items() if logs_weights(runs)}
    if not runs_of:
        return None
    quantities = [(quantity, lambda run, record, quantity=quantity: logged_value(record, quantity), ".3f")
                  for quantity in (MEAN_WEIGHT, *TRAINING_DIAGNOSTICS)]
    return by_checkpoint_table(runs_of, results.methods, lambda method: quantities)


def logs_weights(runs: list[Run]) -> bool:
    return any(WEIGHT_KEY.match(key) for run in runs for record in run.records for key in record)


def own_diagnostics(runs: list[Run]) -> list[str]:
    """The numbers these runs log besides DomainBed's (``DOMAINBED_KEYS``, accuracies)
    and, for runs that log DGE's weights, besides the equilibrium table's, sorted."""
    shown_elsewhere = TRAINING_DIAGNOSTICS if logs_weights(runs) else ()
    return sorted({key for run in runs for record in run.records for key, value in record.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)
                   and key not in DOMAINBED_KEYS and not key.endswith("_acc")
                   and not WEIGHT_KEY.match(key) and key not in shown_elsewhere})


def diagnostics_table(results: DatasetResults) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of each method's own diagnostics over training (``own_diagnostics``
    of its selected runs): the mean over those runs at each checkpoint all of them
    logged; ``None`` when no method logs any."""
    runs_of = selected_runs(results)
    keys_of = {method: own_diagnostics(runs) for method, runs in runs_of.items()}
    if not any(keys_of.values()):
        return None

    def quantities_of(method: str):
        return [(key, lambda run, record, key=key: record.get(key), ".3f") for key in keys_of[method]]

    return by_checkpoint_table({method: runs for method, runs in runs_of.items() if keys_of[method]},
                               results.methods, quantities_of)


def learning_curve_table(results: DatasetResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the learning curves: per method, the mean over its selected
    runs (every source and trial) of the source's validation accuracy (%, ``out``
    split) and of the training loss DomainBed logs (the mean over the steps since the
    previous checkpoint), at each checkpoint every run logged: where they plateau."""
    quantities = [
        (SOURCE_VALIDATION_CURVE, lambda run, record: 100 * record[f"env{run.source}_out_acc"], ".1f"),
        (TRAINING_LOSS, lambda run, record: record.get("loss"), ".3f"),
    ]
    return by_checkpoint_table(selected_runs(results), results.methods, lambda method: quantities)
