"""Refuse jobs whose batch size exceeds a training environment's in-split.

DomainBed's ``InfiniteDataLoader`` draws batches with ``drop_last``; when the batch
size is larger than a training environment's in-split it never yields one and the
job spins forever. Before launching, every job's batch size (the registry's default
for hparams_seed 0, its random draw otherwise, then ``--hparams``) is compared with
the in-split of each of its training environments: ``n - int(n * holdout_fraction)``
of the environment's ``n`` examples, as train.py splits it.

Environment sizes are read only where that is cheap and needs nothing that is not
already on disk:

- MNIST datasets (RotatedMNIST, ColoredMNIST): the number of images in the MNIST
  files under ``--data_dir``; environment ``i`` of ``E`` gets every ``E``-th image
  from the ``i``-th, as DomainBed deals them. Nothing is rotated or coloured.
- Every other dataset: DomainBed's dataset class built from ``--data_dir`` (image
  folders only list their files; nothing is decoded).

A dataset that cannot be read that way (its files are not there, or it would
download) cannot be checked: the sweep refuses to launch unless told to skip the check
(``--skip_data_check``, for clusters where only the compute nodes see the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from domainbed import datasets, hparams_registry

from domainbed_dge.experiments.jobs import job_hparams
from domainbed_dge.plugin.data_guard import check_mnist


class SizesUnavailable(RuntimeError):
    """A dataset's environment sizes cannot be read from the data directory."""


@dataclass(frozen=True)
class OversizedBatch:
    """A training environment whose in-split is smaller than a job's batch."""

    dataset: str
    environment: int
    environment_name: str
    batch_size: int
    in_split: int
    environment_size: int
    holdout_fraction: float

    def message(self, jobs: int) -> str:
        return (
            f"{self.dataset} environment {self.environment} ({self.environment_name!r}): batch_size "
            f"{self.batch_size} exceeds its training (in) split of {self.in_split} examples "
            f"({self.environment_size} examples, holdout_fraction {self.holdout_fraction}); {jobs} job(s)"
        )


def in_split_size(environment_size: int, holdout_fraction: float) -> int:
    """Examples train.py trains on out of an environment of ``environment_size``."""
    return environment_size - int(environment_size * holdout_fraction)


def environment_sizes(dataset: str, data_dir: str) -> list[int]:
    """Number of examples in each environment of ``dataset``; raises
    :class:`SizesUnavailable` when they cannot be read cheaply from ``data_dir``."""
    dataset_class = datasets.get_dataset_class(dataset)
    try:
        if issubclass(dataset_class, datasets.MultipleEnvironmentMNIST):
            return _mnist_environment_sizes(dataset, data_dir, len(dataset_class.ENVIRONMENTS))
        hparams = hparams_registry.default_hparams("ERM", dataset)
        return [len(environment) for environment in dataset_class(data_dir, [], hparams)]
    except Exception as error:  # any failure to read the data means: not checked
        raise SizesUnavailable(f"{type(error).__name__}: {error}") from error


def _mnist_environment_sizes(dataset: str, data_dir: str, num_environments: int) -> list[int]:
    from torchvision.datasets import MNIST

    check_mnist(dataset, data_dir)  # its error names the command that writes the files
    total = sum(len(MNIST(data_dir, train=train, download=False)) for train in (True, False))
    return [len(range(env, total, num_environments)) for env in range(num_environments)]


def find_oversized(
    train_args_list: Iterable[dict], sizes_of: Callable[[str], list[int]]
) -> dict[OversizedBatch, int]:
    """Each oversized (environment, batch size) with the number of jobs it affects.
    ``sizes_of(dataset)`` gives environment sizes; it is called once per dataset."""
    sizes_cache: dict[str, list[int]] = {}
    found: dict[OversizedBatch, int] = {}
    for train_args in train_args_list:
        dataset = train_args["dataset"]
        if dataset not in sizes_cache:
            sizes_cache[dataset] = sizes_of(dataset)
        sizes = sizes_cache[dataset]
        batch_size = job_hparams(train_args)["batch_size"]
        for env, size in enumerate(sizes):
            if env in train_args["test_envs"]:
                continue
            in_split = in_split_size(size, train_args["holdout_fraction"])
            if batch_size > in_split:
                problem = OversizedBatch(
                    dataset, env, datasets.get_dataset_class(dataset).ENVIRONMENTS[env], batch_size,
                    in_split, size, train_args["holdout_fraction"],
                )
                found[problem] = found.get(problem, 0) + 1
    return found


@dataclass(frozen=True)
class BatchCheck:
    """What :func:`check_batch_sizes` found: one error line per oversized (environment,
    batch size), and one line per dataset whose environments could not be read."""

    problems: list
    unreadable: list


def check_batch_sizes(train_args_list: list[dict], data_dir: str, report: Callable[[str], None]) -> BatchCheck:
    """Check every job; ``report`` gets one line per dataset that was checked."""
    readable: dict[str, list[int]] = {}
    unreadable = []
    for dataset in sorted({args["dataset"] for args in train_args_list}):
        try:
            readable[dataset] = environment_sizes(dataset, data_dir)
        except SizesUnavailable as error:
            unreadable.append(f"{dataset}: its environments cannot be read from --data_dir {data_dir} ({error})")
            continue
        report(f"batch-size check: {dataset} environment sizes {readable[dataset]}")
    checked = [args for args in train_args_list if args["dataset"] in readable]
    found = find_oversized(checked, readable.__getitem__)
    problems = [problem.message(jobs) for problem, jobs in sorted(found.items(), key=lambda item: _order(item[0]))]
    return BatchCheck(problems, unreadable)


def _order(problem: OversizedBatch) -> tuple:
    return problem.dataset, problem.environment, problem.batch_size
