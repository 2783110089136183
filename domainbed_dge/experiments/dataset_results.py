"""One dataset's selected runs, arranged for tables and plots.

:class:`DatasetResults` holds, for one dataset, the selections (see
``experiments.selection``) of every method, source domain and trial, the methods in
the package's order (``ALGORITHM_ORDER``, then the others alphabetically) and the
environments under DomainBed's names; ``source_means`` reduces a method's trials to a
mean per source and the mean of those means (the tables' ``Avg``).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from domainbed_dge.experiments.records import Run, label_of
from domainbed_dge.experiments.selection import Selection
from domainbed_dge.plugin.host import NOT_IMPORTABLE
from domainbed_dge.plugin.methods import NAMES

#: Rows come in this order, then other algorithms alphabetically; a method's labelled
#: variants follow it, alphabetically.
ALGORITHM_ORDER = ("ERM", *NAMES)
#: A cell where no trial ran.
MISSING = "X"


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


def source_means(results: DatasetResults, values_of: Callable[[str, int], list[float]],
                 method: str) -> tuple[list[float | None], float | None]:
    """``method``'s mean (%) of ``values_of`` per source (``None`` without values), and
    the mean of those means (``None`` when a source has none)."""
    means = [mean_and_std(values)[0] if (values := values_of(method, source)) else None
             for source in results.sources]
    return means, None if None in means else statistics.fmean(means)
