"""SDG tables: selections arranged per dataset, rendered as text, markdown or LaTeX.

For each dataset and selection method (see ``experiments.selection``): one row per
method, one column per source domain that some run trained on, and an ``Avg`` column.
A cell is the accuracy (%) on the target domains' ``in`` splits, averaged over the
targets (a preset's ``targets`` when it names them), as mean ± population standard
deviation (ddof 0) over trials, with the number of trials in parentheses; ``X`` where
no trial ran. ``Avg`` is the mean of the row's source columns, ``X`` unless every
source has one. With a single source, the accuracy on each target as well (rows
ranked). Then, per method, the source x target accuracy matrix (mean over
trials), and, where a reference row is there, each method's paired difference to it
(``experiments.paired``); given several reference rows, the overview that ranks the
methods. Over training, for the runs source validation selected, the tables of
``experiments.over_training``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from domainbed_dge.experiments.dataset_results import MISSING, DatasetResults, mean_and_std, source_means
from domainbed_dge.experiments.over_training import diagnostics_table, learning_curve_table, training_table
from domainbed_dge.experiments.paired import overview_table, paired_table, ranked_by_average
from domainbed_dge.experiments.presets import STEP_MATCHED_CONTROL
from domainbed_dge.experiments.records import Loaded
from domainbed_dge.experiments.selection import ORACLE, SELECTION_METHODS, SOURCE_VALIDATION, select

#: The step-matched control every method is compared with, pair by pair.
PAIRED_REFERENCE = STEP_MATCHED_CONTROL
FORMATS = ("text", "markdown", "latex")
SELECTION_DESCRIPTIONS = {
    SOURCE_VALIDATION: "checkpoint and hparams chosen on the source domain's out split",
    ORACLE: "hparams chosen on the target domains' out splits, last checkpoint (DomainBed's oracle)",
}
PLUS_MINUS = {"text": "+/-", "markdown": "±", "latex": "$\\pm$"}


def format_cell(values: Sequence[float], fmt: str) -> str:
    if not values:
        return MISSING
    mean, std = mean_and_std(values)
    return f"{mean:.1f} {PLUS_MINUS[fmt]} {std:.1f} ({len(values)})"


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


def target_table(results: DatasetResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the accuracy (%) on each target of the one source (mean over
    trials), their mean and the number of trials; rows ranked by that mean, as in the
    overview. Columns: the environments some method has a target accuracy on."""
    (source,) = results.sources
    by_method = {method: results.target_matrix(method)[source] for method in results.methods}
    targets = [target for target in range(len(results.environments))
               if any(row[target] is not None for row in by_method.values())]
    header = ["Method", *(results.environments[target] for target in targets), "Avg", "trials"]
    rows = []
    for method in ranked_by_average(results):
        values = [by_method[method][target] for target in targets]
        cells = [MISSING if value is None else f"{100 * value:.1f}" for value in values]
        average = MISSING if None in values else f"{100 * sum(values) / len(values):.1f}"
        rows.append([method, *cells, average, str(len(results.trials(method, source)))])
    return header, rows


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
            if len(results.sources) == 1:
                parts.append(render(f"{title}: accuracy (%) on each target domain, rows ranked by average target "
                                    "accuracy, mean over trials", *target_table(results), fmt))
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
