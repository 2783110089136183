"""Tables of single-domain generalization (SDG) results from a DomainBed sweep.

    python -m domainbed_dge.collect_results --input_dir SWEEP_OUTPUT [--format text|markdown|latex]

For each dataset and each selection method (``source validation``: checkpoint and
hyperparameters chosen on the source domain's ``out`` split; ``oracle``: on the
target domains' ``out`` splits, as DomainBed's oracle; see ``domainbed_dge.results``):
one row per algorithm (or labelled variant), one column per source domain that
some run trained on, and an ``Avg`` column. A cell is the accuracy (%) on the target
domains' ``in`` splits, averaged over the targets (a preset's ``targets`` when it
names them), as mean ± population standard deviation (ddof 0) over
trials, with the number of trials in parentheses; ``X`` where no trial ran. ``Avg`` is the
mean of the row's source columns, ``X`` unless every source has one. Then, per
method, the source x target accuracy matrix (mean over trials).

Only SDG records count: those whose ``args.test_envs`` are every environment but
one. MDG results go through DomainBed's own
``python -m domainbed.scripts.collect_results --input_dir SWEEP_OUTPUT``.
Malformed or truncated lines of results.jsonl are skipped with a warning on stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Sequence

from domainbed_dge.results import SELECTION_METHODS, SOURCE_VALIDATION, DatasetResults, Loaded, load_runs, select

FORMATS = ("text", "markdown", "latex")
SELECTION_DESCRIPTIONS = {
    SOURCE_VALIDATION: "checkpoint and hparams chosen on the source domain's out split",
    "oracle": "hparams chosen on the target domains' out splits, last checkpoint (DomainBed's oracle)",
}
MISSING = "X"
PLUS_MINUS = {"text": "+/-", "markdown": "±", "latex": "$\\pm$"}


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof 0), in percent."""
    return 100 * statistics.fmean(values), 100 * statistics.pstdev(values)


def format_cell(values: Sequence[float], fmt: str) -> str:
    if not values:
        return MISSING
    mean, std = mean_and_std(values)
    return f"{mean:.1f} {PLUS_MINUS[fmt]} {std:.1f} ({len(values)})"


def accuracy_table(results: DatasetResults, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-source table."""
    header = ["Algorithm", *(results.environments[source] for source in results.sources), "Avg"]
    rows = []
    for method in results.methods:
        cells, means = [], []
        for source in results.sources:
            accuracies = results.accuracies(method, source)
            cells.append(format_cell(accuracies, fmt))
            means.append(mean_and_std(accuracies)[0] if accuracies else None)
        average = MISSING if None in means else f"{statistics.fmean(means):.1f}"
        rows.append([method, *cells, average])
    return header, rows


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


def report(input_dir: str, loaded: Loaded, fmt: str) -> str:
    """The whole output: what was read, a legend, then every dataset's tables."""
    lines = [
        f"SDG results under {input_dir}: {loaded.records} records in {loaded.files} results files, "
        f"{len(loaded.runs)} SDG runs; {loaded.skipped_lines} bad lines skipped; {loaded.other_records} records "
        "not SDG (for MDG: python -m domainbed.scripts.collect_results).",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m domainbed_dge.collect_results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="MDG results (one test environment per job) are DomainBed's: "
               "python -m domainbed.scripts.collect_results --input_dir SWEEP_OUTPUT",
    )
    parser.add_argument("--input_dir", required=True, help="a sweep's output directory (searched at any depth)")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--latex", action="store_true", help="same as --format latex (DomainBed's flag)")
    args = parser.parse_args(argv)
    fmt = "latex" if args.latex else args.format
    try:
        loaded = load_runs(args.input_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not loaded.runs:
        print(f"No SDG records under {args.input_dir} ({loaded.records} records in {loaded.files} results files, "
              f"{loaded.skipped_lines} bad lines skipped).", file=sys.stderr)
        return 1
    sys.stdout.write(report(args.input_dir, loaded, fmt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
