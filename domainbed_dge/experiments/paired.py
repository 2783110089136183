"""Paired differences: each method minus a reference on the (source, trial) pairs both
ran, with a 95 % Student-t interval, and the overview that ranks the methods beside
their difference to each of several references.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

from domainbed_dge.experiments.dataset_results import MISSING, DatasetResults, source_means


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


def average_accuracies(results: DatasetResults) -> dict[str, float | None]:
    """Each method's mean target accuracy (%) over the sources (``Avg``; ``None`` when a
    source has no trial)."""
    return {method: source_means(results, results.accuracies, method)[1] for method in results.methods}


def ranked_by_average(results: DatasetResults) -> list[str]:
    """The methods by their mean target accuracy over the sources (``Avg``), highest
    first; methods without an ``Avg`` last, in their order."""
    average = average_accuracies(results)
    return sorted(results.methods, key=lambda method: (average[method] is None, -(average[method] or 0.0)))


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
    for method in ranked_by_average(results):
        means, avg = source_means(results, results.accuracies, method)
        shown = [MISSING if value is None else f"{value:.1f}" for value in [*means, avg]]
        if with_validation:
            _, validation_avg = source_means(results, results.scores, method)
            shown.append(MISSING if validation_avg is None else f"{validation_avg:.1f}")
        for reference in references:
            paired = paired_of[reference].get(method)
            shown.append("-" if method == reference else MISSING if paired is None else interval_cell(paired))
        entries.append((avg, method, shown))
    header = ["Rank", "Method", *(results.environments[source] for source in results.sources), "Avg",
              *(["source validation Avg"] if with_validation else []), *(f"vs {reference}" for reference in references)]
    rows = [[MISSING if avg is None else str(rank), method, *shown]
            for rank, (avg, method, shown) in enumerate(entries, start=1)]
    return header, rows
