"""SDG tables: selections arranged per dataset, rendered as text, markdown or LaTeX.

For each dataset and selection method (see ``experiments.selection``): one row per
method, one column per source domain that some run trained on, and an ``Avg`` column.
A cell is the accuracy (%) on the target domains' ``in`` splits, averaged over the
targets (a preset's ``targets`` when it names them), as mean ± population standard
deviation (ddof 0) over trials, with the number of trials in parentheses; ``X`` where
no trial ran. ``Avg`` is the mean of the row's source columns, ``X`` unless every
source has one. Then, per method, the source x target accuracy matrix (mean over
trials), and, where a reference row is there, each method's paired difference to it
over (source, trial) pairs with a 95 % Student-t interval; given several reference
rows, an overview that ranks the methods by average target accuracy beside their
paired difference to each. Over training, for the runs source validation selected:
each method's learning curves (source validation accuracy, training loss), DGE's
equilibrium (its weights and diagnostics) and every other number a method's update
logs (its own diagnostics), by checkpoint.
"""

from __future__ import annotations

import re
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from domainbed_dge.experiments.records import Loaded, Run, label_of
from domainbed_dge.experiments.presets import STEP_MATCHED_CONTROL
from domainbed_dge.experiments.selection import ORACLE, SELECTION_METHODS, SOURCE_VALIDATION, Selection, select
from domainbed_dge.plugin.host import NOT_IMPORTABLE
from domainbed_dge.plugin.methods import NAMES

#: Rows come in this order, then other algorithms alphabetically; a method's labelled
#: variants follow it, alphabetically.
ALGORITHM_ORDER = ("ERM", *NAMES)
#: The step-matched control every method is compared with, pair by pair.
PAIRED_REFERENCE = STEP_MATCHED_CONTROL
FORMATS = ("text", "markdown", "latex")
SELECTION_DESCRIPTIONS = {
    SOURCE_VALIDATION: "checkpoint and hparams chosen on the source domain's out split",
    ORACLE: "hparams chosen on the target domains' out splits, last checkpoint (DomainBed's oracle)",
}
MISSING = "X"
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
PLUS_MINUS = {"text": "+/-", "markdown": "±", "latex": "$\\pm$"}


def method_order(algorithm_of: dict[str, str]) -> list[str]:
    """The methods (keys of ``algorithm_of``) ordered by their algorithm
    (``ALGORITHM_ORDER`` first), unlabelled first."""

    def key(method: str):
        algorithm = algorithm_of[method]
        rank = ALGORITHM_ORDER.index(algorithm) if algorithm in ALGORITHM_ORDER else len(ALGORITHM_ORDER)
        return rank, algorithm, method != label_of(algorithm), method

    return sorted(algorithm_of, key=key)


def environment_names(dataset: str, num_environments: int) -> list[str]:
    """DomainBed's names for the dataset's environments; ``env<i>`` where DomainBed
    cannot be imported, does not know the dataset or counts its environments
    differently, said once on stderr."""
    try:
        from domainbed import datasets

        names = list(datasets.get_dataset_class(dataset).ENVIRONMENTS)
        why = f"DomainBed has {len(names)} environments for {dataset}, the results {num_environments}"
    except ImportError:
        names, why = [], NOT_IMPORTABLE
    except NotImplementedError:
        names, why = [], f"DomainBed does not know the dataset {dataset}"
    if len(names) == num_environments:
        return names
    _warn_once(f"warning: environments of {dataset} are labelled env0 .. env{num_environments - 1}: {why}")
    return [f"env{env}" for env in range(num_environments)]


_WARNED: set = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def dataset_order(names: Iterable[str]) -> list[str]:
    """DomainBed's order of datasets, then unknown ones alphabetically."""
    try:
        from domainbed import datasets

        known = list(datasets.DATASETS)
    except ImportError:  # environment_names says so
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
                methods=method_order(algorithm_of),
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

    def scores(self, method: str, source: int) -> list[float]:
        """Each trial's selection score: for source validation selection, the chosen
        checkpoint's accuracy on the source's ``out`` split."""
        return [selection.score for selection in self.trials(method, source)]

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


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof 0), in percent."""
    return 100 * statistics.fmean(values), 100 * statistics.pstdev(values)


def format_cell(values: Sequence[float], fmt: str) -> str:
    if not values:
        return MISSING
    mean, std = mean_and_std(values)
    return f"{mean:.1f} {PLUS_MINUS[fmt]} {std:.1f} ({len(values)})"


def source_means(results: DatasetResults, values_of: Callable[[str, int], list[float]],
                 method: str) -> tuple[list[float | None], float | None]:
    """``method``'s mean (%) of ``values_of`` per source (``None`` without values), and
    the mean of those means (``None`` when a source has none)."""
    means = [mean_and_std(values)[0] if (values := values_of(method, source)) else None
             for source in results.sources]
    return means, None if None in means else statistics.fmean(means)


def per_source_table(results: DatasetResults, fmt: str,
                     values_of: Callable[[str, int], list[float]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``values_of(method, source)`` (fractions, one per trial): mean ±
    std (trials) per source, and the mean of the sources' means."""
    header = ["Algorithm", *(results.environments[source] for source in results.sources), "Avg"]
    rows = []
    for method in results.methods:
        cells = [format_cell(values_of(method, source), fmt) for source in results.sources]
        _, average = source_means(results, values_of, method)
        rows.append([method, *cells, MISSING if average is None else f"{average:.1f}"])
    return header, rows


def accuracy_table(results: DatasetResults, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-source table: target accuracy (%) of the selected
    checkpoints, mean ± std over trials."""
    return per_source_table(results, fmt, results.accuracies)


def validation_table(results: DatasetResults, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the selection scores: for source-validation selection, the
    chosen checkpoint's accuracy (%) on the source's ``out`` split, mean ± std over trials."""
    return per_source_table(results, fmt, results.scores)


def matrix_table(results: DatasetResults, method: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the source x target matrix of ``method`` (in percent)."""
    header = ["source \\ target", *results.environments]
    rows = []
    matrix = results.target_matrix(method)
    for source in results.sources:
        row = matrix[source]
        cells = ["-" if target == source else MISSING if value is None else f"{100 * value:.1f}"
                 for target, value in enumerate(row)]
        rows.append([results.environments[source], *cells])
    return header, rows


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


def render(title: str, header: list[str], rows: list[list[str]], fmt: str) -> str:
    """A titled table as text, markdown or a LaTeX tabular."""
    if fmt == "markdown":
        lines = [f"#### {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        lines = [f"\\paragraph{{{latex_escape(title)}}}", "", "\\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
                 "\\toprule", " & ".join(f"\\textbf{{{latex_escape(cell)}}}" for cell in header) + " \\\\",
                 "\\midrule"]
        lines += [" & ".join([latex_escape(row[0]), *row[1:]]) + " \\\\" for row in rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [f"-------- {title}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    replacements = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
    return "".join(replacements.get(char, char) for char in text)


def unfinished_note(loaded: Loaded) -> str:
    """What the header says of jobs without ``done``: nothing when there are none."""
    if not loaded.unfinished_files:
        return ""
    if loaded.finished_only:
        return f" {loaded.unfinished_files} unfinished results files (no `done`) left out (--finished_only)."
    return (f" {loaded.unfinished_files} of the results files are unfinished (no `done`: running or stopped jobs),"
            " and their checkpoints so far are counted; --finished_only leaves them out.")


def report(input_dir: str, loaded: Loaded, fmt: str, references: Sequence[str] = (PAIRED_REFERENCE,)) -> str:
    """The whole output: what was read, a legend, then every dataset's tables (with
    the paired differences to each of ``references`` where that row exists, and, for
    two or more references, the overview that ranks the rows)."""
    lines = [
        f"SDG results under {input_dir}: {loaded.records} records in {loaded.files} results files, "
        f"{len(loaded.runs)} SDG runs; {loaded.skipped_lines} bad lines skipped; {loaded.other_records} records "
        "not SDG (for MDG: python -m domainbed.scripts.collect_results)." + unfinished_note(loaded),
        "Accuracy tables: accuracy (%) on the target domains' in splits, averaged over the targets; "
        "mean +/- std over trials (number of trials); columns: the source domain.",
        *(f"Selection '{method}': {description}." for method, description in SELECTION_DESCRIPTIONS.items()),
    ]
    parts = []
    for method in SELECTION_METHODS:
        selections = select(loaded.runs, method)
        for results in DatasetResults.build(loaded.runs, selections):
            title = f"{results.dataset}, {method} selection"
            parts.append(render(f"{title}: accuracy by source domain", *accuracy_table(results, fmt), fmt))
            if method == SOURCE_VALIDATION:
                parts.append(render(f"{title}: the selected checkpoints' source validation accuracy (%)",
                                    *validation_table(results, fmt), fmt))
            present = [reference for reference in references if reference in results.methods]
            if len(present) >= 2:
                validation = method == SOURCE_VALIDATION
                shown = ("the selected checkpoints' source validation accuracy (%, Avg), " if validation else "")
                parts.append(render(f"{title}: overview, rows ranked by average target accuracy: accuracy (%) by "
                                    f"source domain (mean over trials), {shown}paired difference to each reference "
                                    "(points, 95% interval)", *overview_table(results, present, validation), fmt))
            for reference in present:
                parts.append(render(f"{title}: paired difference to {reference} over (source, trial) pairs, "
                                    "target accuracy in points", *paired_table(results, reference), fmt))
            if method == SOURCE_VALIDATION:
                parts.append(render(f"{results.dataset}: learning curves of the selected runs, by checkpoint "
                                    "step: mean over the runs of every source and trial",
                                    *learning_curve_table(results), fmt))
                training = training_table(results)
                if training is not None:
                    parts.append(render(f"{results.dataset}: DGE's equilibrium over training, by checkpoint step: "
                                        "mean over the runs of every source and trial, each value the mean over "
                                        "the steps since the previous checkpoint", *training, fmt))
                diagnostics = diagnostics_table(results)
                if diagnostics is not None:
                    parts.append(render(f"{results.dataset}: each method's own diagnostics over training, by "
                                        "checkpoint step: mean over the runs of every source and trial, each value "
                                        "the mean over the steps since the previous checkpoint", *diagnostics, fmt))
            for row_method in results.methods:
                parts.append(render(f"{title}, {row_method}: source x target accuracy (%), mean over trials",
                                    *matrix_table(results, row_method), fmt))
    if fmt == "latex":
        preamble = ["\\documentclass{article}", "\\usepackage{booktabs}", "\\begin{document}",
                    *(f"% {line}" for line in lines), ""]
        return "\n".join(preamble) + "\n".join(parts) + "\n\\end{document}\n"
    if fmt == "markdown":
        lines = [line + "  " for line in lines]
    return "\n".join(lines) + "\n\n" + "\n".join(parts)


@dataclass(frozen=True)
class PairedDifference:
    """``method`` minus the reference on the (source, trial) pairs both ran, in points
    of target accuracy: the mean, a 95 % Student-t interval (``None`` for fewer than
    two pairs) and how many pairs it won and lost."""

    method: str
    differences: list

    @property
    def mean(self) -> float:
        return 100 * statistics.fmean(self.differences)

    @property
    def interval(self) -> tuple[float, float] | None:
        n = len(self.differences)
        if n < 2:
            return None
        from scipy import stats

        half = stats.t.ppf(0.975, n - 1) * 100 * statistics.stdev(self.differences) / n**0.5
        return self.mean - half, self.mean + half

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def losses(self) -> int:
        return sum(d < 0 for d in self.differences)


def paired_differences(results: DatasetResults, reference: str) -> list[PairedDifference]:
    """Each other method's :class:`PairedDifference` to ``reference``."""
    found = []
    for method in results.methods:
        if method == reference:
            continue
        differences = []
        for source in results.sources:
            mine = {s.run.trial_seed: s.accuracy for s in results.trials(method, source)}
            theirs = {s.run.trial_seed: s.accuracy for s in results.trials(reference, source)}
            differences += [mine[trial] - theirs[trial] for trial in sorted(mine.keys() & theirs.keys())]
        if differences:
            found.append(PairedDifference(method, differences))
    return found


def paired_table(results: DatasetResults, reference: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired differences to ``reference``."""
    header = ["Method", "pairs", "mean diff (points)", "95% interval", "wins", "losses"]
    rows = []
    for paired in paired_differences(results, reference):
        rows.append([paired.method, str(len(paired.differences)), f"{paired.mean:+.1f}", interval_text(paired),
                     str(paired.wins), str(paired.losses)])
    return header, rows


def interval_text(paired: PairedDifference) -> str:
    """``[low, high]`` in points; ``MISSING`` for one pair."""
    interval = paired.interval
    return MISSING if interval is None else f"[{interval[0]:+.1f}, {interval[1]:+.1f}]"


def interval_cell(paired: PairedDifference) -> str:
    """``mean [low, high]`` in points."""
    return f"{paired.mean:+.1f} {interval_text(paired)}"


def overview_table(results: DatasetResults, references: Sequence[str],
                   with_validation: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ranking: each method's mean target accuracy (%) per source
    and ``Avg`` (the mean of the sources' means), with ``with_validation`` (source
    validation selection) its selected checkpoints' source validation accuracy
    (``Avg``), and its paired difference to each of ``references`` (``-`` on the
    reference's own row). Rows by ``Avg``, highest first (rank 1); rows without an
    ``Avg`` last, unranked."""
    paired_of = {reference: {paired.method: paired for paired in paired_differences(results, reference)}
                 for reference in references}

    entries = []
    for method in results.methods:
        means, avg = source_means(results, results.accuracies, method)
        shown = [MISSING if value is None else f"{value:.1f}" for value in [*means, avg]]
        if with_validation:
            _, validation_avg = source_means(results, results.scores, method)
            shown.append(MISSING if validation_avg is None else f"{validation_avg:.1f}")
        for reference in references:
            paired = paired_of[reference].get(method)
            shown.append("-" if method == reference else MISSING if paired is None else interval_cell(paired))
        entries.append((avg, method, shown))
    ranked = sorted(entries, key=lambda entry: (entry[0] is None, -(entry[0] or 0.0)))
    header = ["Rank", "Method", *(results.environments[source] for source in results.sources), "Avg",
              *(["source validation Avg"] if with_validation else []), *(f"vs {reference}" for reference in references)]
    rows = [[MISSING if avg is None else str(rank), method, *shown]
            for rank, (avg, method, shown) in enumerate(ranked, start=1)]
    return header, rows

