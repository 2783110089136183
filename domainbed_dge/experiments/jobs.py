"""The jobs of a sweep: train.py's arguments in SDG or MDG, as DomainBed's own ``Job``.

DomainBed's ``domainbed.scripts.sweep.Job`` names each job's output directory by the
hash of its arguments and builds its literal ``python -m domainbed.scripts.train ...``
command, so the directories are the ones DomainBed's tools expect. MDG jobs come
from DomainBed's own ``make_args_list``; SDG jobs (DomainBed has no such mode) are
made alike, with one job per source environment whose test environments are all
the others, and the same seed derivation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Sequence

from domainbed import datasets, hparams_registry
from domainbed.lib import misc
from domainbed.scripts import sweep as domainbed_sweep

from domainbed_dge.experiments.presets import MODES



@dataclass(frozen=True)
class Variant:
    """What a row of the results trains: an algorithm with the ``--hparams`` JSON
    string its jobs pass to train.py verbatim (``None``: no ``--hparams``)."""

    name: str
    algorithm: str
    hparams: str | None = None


@dataclass(frozen=True)
class SweepJob:
    """One train.py run: the variant it belongs to and DomainBed's ``Job`` for it."""

    variant: Variant
    job: domainbed_sweep.Job
    sweep_dir: str

    @property
    def train_args(self) -> dict:
        return self.job.train_args

    @property
    def state(self) -> str:
        return self.job.state

    def rescanned(self) -> SweepJob:
        """The same job with its state read from disk again."""
        args = {key: value for key, value in self.train_args.items() if key != "output_dir"}
        return SweepJob(self.variant, domainbed_sweep.Job(args, self.sweep_dir), self.sweep_dir)

    def describe(self) -> str:
        args = self.train_args
        test_envs = " ".join(str(env) for env in args["test_envs"])
        return (
            f"{args['dataset']} {self.variant.name} test_envs [{test_envs}] "
            f"trial {args['trial_seed']} hparams_seed {args['hparams_seed']}"
        )


def sdg_test_envs(num_environments: int, sources: Sequence[int] | None = None) -> Iterator[list[int]]:
    """One test-environment list per source environment (``sources``, default all):
    all environments but it."""
    if sources is None:
        sources = range(num_environments)
    for source in sources:
        if not 0 <= source < num_environments:
            raise ValueError(f"source environment {source} is not allowed; allowed: 0 .. {num_environments - 1}")
        yield [env for env in range(num_environments) if env != source]


def sdg_args_list(
    *,
    n_trials: int,
    dataset_names: Sequence[str],
    algorithm: str,
    n_hparams_from: int,
    n_hparams: int,
    steps: int | None,
    data_dir: str,
    task: str,
    holdout_fraction: float,
    hparams: str | None,
    sources: Sequence[int] | None = None,
) -> list[dict]:
    """train.py arguments for SDG, with the keys and seeds DomainBed's ``make_args_list``
    gives its jobs."""
    args_list = []
    for trial_seed in range(n_trials):
        for dataset in dataset_names:
            for test_envs in sdg_test_envs(datasets.num_environments(dataset), sources):
                for hparams_seed in range(n_hparams_from, n_hparams):
                    train_args = {
                        "dataset": dataset,
                        "algorithm": algorithm,
                        "test_envs": test_envs,
                        "holdout_fraction": holdout_fraction,
                        "hparams_seed": hparams_seed,
                        "data_dir": data_dir,
                        "task": task,
                        "trial_seed": trial_seed,
                        "seed": misc.seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed),
                    }
                    if steps is not None:
                        train_args["steps"] = steps
                    if hparams is not None:
                        train_args["hparams"] = hparams
                    args_list.append(train_args)
    return args_list


def make_jobs(
    *,
    mode: str,
    variants: Sequence[Variant],
    dataset_names: Sequence[str],
    n_trials: int,
    n_hparams_from: int,
    n_hparams: int,
    steps: int | None,
    data_dir: str,
    output_dir: str,
    task: str,
    holdout_fraction: float,
    single_test_envs: bool,
    sources: Sequence[int] | None = None,
    checkpoint_freq: int | None = None,
) -> list[SweepJob]:
    """Every job of the sweep, variant by variant (SDG: of the ``sources``, default all;
    ``checkpoint_freq``, when given, is passed to train.py)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if single_test_envs and mode != "mdg":
        raise ValueError("single_test_envs only applies to mode 'mdg' (SDG has one job per source environment)")
    jobs = []
    for variant in variants:
        common = dict(
            n_trials=n_trials,
            dataset_names=list(dataset_names),
            n_hparams_from=n_hparams_from,
            n_hparams=n_hparams,
            steps=steps,
            data_dir=data_dir,
            task=task,
            holdout_fraction=holdout_fraction,
            hparams=variant.hparams,
        )
        if mode == "sdg":
            args_list = sdg_args_list(algorithm=variant.algorithm, sources=sources, **common)
        else:
            args_list = domainbed_sweep.make_args_list(
                algorithms=[variant.algorithm], single_test_envs=single_test_envs, **common
            )
        if checkpoint_freq is not None:
            args_list = [{**args, "checkpoint_freq": checkpoint_freq} for args in args_list]
        jobs.extend(SweepJob(variant, domainbed_sweep.Job(args, output_dir), output_dir) for args in args_list)
    return jobs


def job_hparams(train_args: dict) -> dict:
    """The hyperparameters train.py will use for these arguments (registry defaults for
    hparams_seed 0, else its random draw, updated with ``--hparams``)."""
    algorithm, dataset, hparams_seed = train_args["algorithm"], train_args["dataset"], train_args["hparams_seed"]
    if hparams_seed == 0:
        hparams = hparams_registry.default_hparams(algorithm, dataset)
    else:
        hparams = hparams_registry.random_hparams(
            algorithm, dataset, misc.seed_hash(hparams_seed, train_args["trial_seed"])
        )
    if train_args.get("hparams"):
        hparams.update(json.loads(train_args["hparams"]))
    return hparams
