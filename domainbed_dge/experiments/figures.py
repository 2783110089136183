"""Figures of single-domain generalization (SDG) results, drawn with matplotlib's Agg
renderer (no display needed), per dataset:

``<dataset>_accuracy.png``
    grouped bars: accuracy (%) on the target domains' ``in`` splits, averaged over
    the targets, for each source domain (and their average, where there are several),
    one bar per method; mean over trials with their standard deviation as error bars.
    The legend sits below the axes, off the bars.
``<dataset>_paired.png``
    a forest plot per reference row (by default ``Baseline`` and ``DGE``, those the sweep
    has): each other row's paired difference in target accuracy to the reference over
    the (source, trial) pairs both ran, its mean as a dot and its 95 % Student-t
    interval as a bar (see ``experiments.paired``); rows ranked by mean target
    accuracy, the same order in every panel; a dashed line at 0. An interval wholly
    above 0 is green, wholly below red, across 0 grey; a row with one pair, which has no
    interval, is an open grey dot. Written where a reference has a paired row.
``<dataset>_source-<domain>_curves.png``
    loss, source validation accuracy (the source's ``out`` split) and target accuracy
    against the training step, one line per method.
``<dataset>_source-<domain>_diagnostics.png``
    DGE's equilibrium weights ``dge_weight_<k>`` (one colour per weight, one line style
    per method) and the engine's diagnostics, each on its own axes
    (``dge_net_vs_gradavg``, ``pair_conflict_fraction`` for DGE and PCGrad,
    ``coordinate_conflict_fraction`` for Agr-*, ``grad_cosine``, ``direction_norm_ratio``,
    ``dge_adjusted_pairs``) against the step, for the methods that log them; written
    only where some run does.

Every figure uses the runs chosen by source-validation selection (see
``experiments.selection``), one per trial; curves are the mean over trials at the
steps all of them logged. Titles say how many trials a figure averages ("one trial"
when none has more). Methods are labelled as in the tables.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
from typing import Sequence

from domainbed_dge.experiments.records import Run, load_runs
from domainbed_dge.experiments.selection import SOURCE_VALIDATION, select
from domainbed_dge.experiments.dataset_results import DatasetResults
from domainbed_dge.experiments.over_training import WEIGHT_KEY
from domainbed_dge.experiments.paired import average_accuracies, paired_differences, ranked_by_average

DIAGNOSTICS = ("dge_net_vs_gradavg", "pair_conflict_fraction", "coordinate_conflict_fraction", "grad_cosine",
               "direction_norm_ratio", "dge_adjusted_pairs")
DPI = 120
#: The rows ``<dataset>_paired.png`` compares against, where a sweep has them.
FOREST_REFERENCES = ("Baseline", "DGE")
#: An interval's colour: wholly above 0, wholly below, across 0.
ABOVE, BELOW, ACROSS = "tab:green", "tab:red", "0.45"


def _figure(width: float, height: float):
    """A figure drawn by the Agg renderer, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colors(methods: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {method: palette(index % palette.N) for index, method in enumerate(methods)}


def over_trials(counts, statistic: str = "mean") -> str:
    """What a title says of the per-line trial ``counts`` (zeros ignored): ``"one trial"``,
    ``"mean over 3 trials"`` or ``"mean over 1-3 trials"``."""
    counts = {count for count in counts if count}
    if counts <= {1}:
        return "one trial"
    low, high = min(counts), max(counts)
    return f"{statistic} over {high if low == high else f'{low}-{high}'} trials"


def safe_name(text: str) -> str:
    """``text`` usable in a file name."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def mean_curve(runs: Sequence[Run], value_of) -> tuple[list[float], list[float]]:
    """Steps logged by every run (where ``value_of(run, record)`` is not None) and the
    mean value there."""
    per_run = []
    for run in runs:
        values = {}
        for record in run.records:
            value = value_of(run, record)
            if value is not None:
                values[record["step"]] = value
        per_run.append(values)
    steps = sorted(set.intersection(*(set(values) for values in per_run))) if per_run else []
    return steps, [statistics.fmean(values[step] for values in per_run) for step in steps]


def accuracy_bars(results: DatasetResults):
    """Grouped bars of target accuracy by source domain, and their average where there
    are several sources."""
    import numpy as np

    average = len(results.sources) > 1
    groups = [*(results.environments[source] for source in results.sources), *(["Avg"] if average else [])]
    colors = _colors(results.methods)
    figure = _figure(max(6.0, 1.2 * len(groups) * max(1, len(results.methods)) / 3), 4.5)
    axes = figure.add_subplot()
    width = 0.8 / len(results.methods)
    for index, method in enumerate(results.methods):
        means, stds = [], []
        for source in results.sources:
            accuracies = [100 * value for value in results.accuracies(method, source)]
            means.append(statistics.fmean(accuracies) if accuracies else np.nan)
            stds.append(statistics.pstdev(accuracies) if len(accuracies) > 1 else np.nan)  # no bar for one trial
        if average:
            means.append(np.mean(means))  # NaN unless every source has a value
            stds.append(np.nan)
        positions = np.arange(len(groups)) - 0.4 + width * (index + 0.5)
        axes.bar(positions, means, width, yerr=stds, capsize=2, label=method, color=colors[method])
    axes.set_xticks(np.arange(len(groups)), groups)
    axes.set_xlabel("source domain")
    axes.set_ylabel("target accuracy (%)")
    counts = [len(results.trials(method, source)) for method in results.methods for source in results.sources]
    axes.set_title(f"{results.dataset}: SDG accuracy on the target domains\n({SOURCE_VALIDATION} selection, "
                   f"{over_trials(counts, 'mean and std')})")
    figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", fontsize="small",
                  ncols=min(4, len(results.methods)))
    return figure


def paired_forest(results: DatasetResults, references: Sequence[str] = FOREST_REFERENCES):
    """Forest plots of each row's paired difference to each of ``references`` the results
    have; ``None`` when none has a paired row."""
    panels = [(reference, {paired.method: paired for paired in paired_differences(results, reference)})
              for reference in references if reference in results.methods]
    panels = [(reference, paired) for reference, paired in panels if paired]
    if not panels:
        return None
    average = average_accuracies(results)
    rows = ranked_by_average(results)
    figure = _figure(1.5 + 4.2 * len(panels), 1.2 + 0.3 * len(rows))
    axes_row = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = {method: -index for index, method in enumerate(rows)}
    for axes, (reference, paired_of) in zip(axes_row, panels):
        for method, paired in paired_of.items():
            interval = paired.interval
            if interval is None:  # one pair: no interval, an open grey dot
                axes.plot([paired.mean], [positions[method]], "o", color=ACROSS, markerfacecolor="white",
                          markersize=5)
                continue
            low, high = interval
            color = ABOVE if low > 0 else BELOW if high < 0 else ACROSS
            axes.plot([low, high], [positions[method]] * 2, color=color, linewidth=2.5, solid_capstyle="butt")
            axes.plot([paired.mean], [positions[method]], "o", color=color, markersize=5)
        axes.axvline(0.0, color="black", linestyle="--", linewidth=0.8)
        pairs = sorted({len(paired.differences) for paired in paired_of.values()})
        axes.set_title(f"vs {reference} ({pairs[-1] if len(pairs) == 1 else f'{pairs[0]}-{pairs[-1]}'} pairs)")
        axes.set_xlabel("difference in target accuracy (points)")
        axes.grid(axis="x", alpha=0.3)
    axes_row[0].set_yticks([positions[method] for method in rows],
                           [f"{method} ({average[method]:.1f})" if average[method] is not None else method
                            for method in rows])
    axes_row[0].set_ylim(-len(rows) + 0.5, 0.5)
    figure.suptitle(f"{results.dataset}: paired differences in target accuracy, mean and 95 % interval\n"
                    f"({SOURCE_VALIDATION} selection; rows ranked by mean target accuracy, in brackets)")
    return figure


def training_curves(results: DatasetResults, source: int):
    """Loss, source validation accuracy and target accuracy against the step."""
    panels = (
        ("training loss", lambda run, record: record.get("loss")),
        ("source validation accuracy (%)", lambda run, record: 100 * record[f"env{run.source}_out_acc"]),
        ("target accuracy (%)", lambda run, record: 100 * run.target_accuracy(record)),
    )
    colors = _colors(results.methods)
    figure = _figure(13, 3.8)
    axes_row = figure.subplots(1, len(panels))
    for axes, (label, value_of) in zip(axes_row, panels):
        for method in results.methods:
            runs = [selection.run for selection in results.trials(method, source)]
            if not runs:
                continue
            steps, values = mean_curve(runs, value_of)
            axes.plot(steps, values, marker=".", label=method, color=colors[method])
        axes.set_xlabel("step")
        axes.set_ylabel(label)
    axes_row[0].legend(fontsize="small")
    counts = [len(results.trials(method, source)) for method in results.methods]
    figure.suptitle(f"{results.dataset}, source {results.environments[source]}: training curves "
                    f"({over_trials(counts)})")
    return figure


def diagnostics(results: DatasetResults, source: int):
    """DGE's weights and the engine's diagnostics against the step; ``None`` when no
    run logs any."""
    colors = _colors(results.methods)
    selected = {method: [s.run for s in results.trials(method, source)] for method in results.methods}
    logged = {key for runs in selected.values() for run in runs for record in run.records for key in record}
    weight_keys = sorted((key for key in logged if WEIGHT_KEY.match(key)),
                         key=lambda key: int(WEIGHT_KEY.match(key)[1]))
    panels = [key for key in DIAGNOSTICS if key in logged]
    if not weight_keys and not panels:
        return None
    columns = (2 + len(panels)) // 2
    figure = _figure(4.4 * columns, 7)
    grid = figure.subplots(2, columns, squeeze=False).ravel()
    for axes in grid[1 + len(panels):]:
        axes.set_visible(False)
    weights_axes = grid[0]
    plot_weights(weights_axes, selected, weight_keys)
    weights_axes.set_title("equilibrium weights dge_weight_k")
    weights_axes.set_xlabel("step")
    if weights_axes.lines:
        weights_axes.legend(fontsize="x-small")
    for axes, key in zip(grid[1:], panels):
        for method, runs in selected.items():
            steps, values = mean_curve(runs, lambda run, record, key=key: record.get(key))
            if steps:
                axes.plot(steps, values, marker=".", color=colors[method], label=method)
        axes.set_title(key)
        axes.set_xlabel("step")
        axes.legend(fontsize="x-small")
    figure.suptitle(f"{results.dataset}, source {results.environments[source]}: DGE weights and gradient "
                    f"diagnostics ({over_trials(len(runs) for runs in selected.values())})")
    return figure


def plot_weights(axes, selected: dict, weight_keys: Sequence[str]) -> None:
    """One line per method and weight: each weight its own colour, each method that logs
    weights its own line style (solid for the first)."""
    from matplotlib import colormaps

    palette = colormaps["Dark2"]
    styles = itertools.cycle(("-", "--", ":", "-."))
    for method, runs in selected.items():
        curves = [mean_curve(runs, lambda run, record, key=key: record.get(key)) for key in weight_keys]
        if not any(steps for steps, _ in curves):
            continue
        style = next(styles)
        for k, (key, (steps, values)) in enumerate(zip(weight_keys, curves)):
            if steps:
                axes.plot(steps, values, linestyle=style, marker=".", color=palette(k % palette.N),
                          label=f"{method} w{WEIGHT_KEY.match(key)[1]}")


def figures(results: DatasetResults, references: Sequence[str] = FOREST_REFERENCES) -> dict:
    """``{file name: figure}`` for one dataset; ``references`` are the forest plot's."""
    prefix = safe_name(results.dataset)
    made = {f"{prefix}_accuracy.png": accuracy_bars(results)}
    forest = paired_forest(results, references)
    if forest is not None:
        made[f"{prefix}_paired.png"] = forest
    for source, name in enumerate(results.environments):
        if not any(results.trials(method, source) for method in results.methods):
            continue
        stem = f"{prefix}_source-{safe_name(name)}"
        made[f"{stem}_curves.png"] = training_curves(results, source)
        figure = diagnostics(results, source)
        if figure is not None:
            made[f"{stem}_diagnostics.png"] = figure
    return made


def write_figures(input_dir: str, output_dir: str, finished_only: bool = False,
                  references: Sequence[str] = FOREST_REFERENCES) -> list[str]:
    """Every figure for the SDG runs under ``input_dir`` (only the jobs that wrote
    ``done`` when ``finished_only``; ``references``: the forest plot's); returns the
    files written."""
    loaded = load_runs(input_dir, finished_only=finished_only)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for results in DatasetResults.build(loaded.runs, select(loaded.runs, SOURCE_VALIDATION)):
        for name, figure in figures(results, references).items():
            path = os.path.join(output_dir, name)
            figure.savefig(path, dpi=DPI)
            written.append(path)
    return written
