"""Launch, list or clean up a DomainBed sweep, in SDG or MDG, from options or a preset.

    python -m domainbed_dge.sweep launch --datasets RotatedMNIST --algorithms ERM DGE \\
        --data_dir D --output_dir O --command_launcher local
    python -m domainbed_dge.sweep launch --preset sweeps/sdg_pacs.json \\
        --data_dir D --output_dir O --command_launcher submitit
    python -m domainbed_dge.sweep list --preset sweeps/sdg_pacs.json --data_dir D --output_dir O
    python -m domainbed_dge.sweep delete_incomplete --preset sweeps/sdg_pacs.json --data_dir D --output_dir O

The options are those of DomainBed's ``domainbed.scripts.sweep``, plus ``--mode``:
``sdg`` (the default) makes one job per source environment, with every other
environment a test environment; ``mdg`` is DomainBed's own choice of test
environments (``--single_test_envs`` for one at a time). Jobs are DomainBed's own
``Job``: same output directories (a hash of the job's arguments) and the same
literal ``python -m domainbed.scripts.train ...`` commands, run by any launcher of
``domainbed.command_launchers.REGISTRY`` (``submitit`` is added by this plugin, see
``domainbed_dge.plugin.launchers``).

``--preset FILE`` takes the datasets, trials, steps, hyperparameters and algorithm
variants from a JSON preset (see ``domainbed_dge.experiments.presets``). Options given on the
command line win over the preset's; ``--algorithms`` keeps the variants of those
algorithms; ``--hparams`` is merged into each variant's (the variant's own keys win).

``launch`` runs only jobs never launched: done jobs are skipped, so running it again
resumes a sweep. Incomplete jobs (a directory without ``done``) are left alone, as they
may still be running; ``delete_incomplete`` removes them so that ``launch`` redoes them.
Before launching anything it refuses: a job whose hyperparameters the plugin's
algorithm would refuse (an unknown key or a value not allowed); a batch size larger
than a training environment's in-split (see ``domainbed_dge.experiments.batch_guard``),
and data it cannot read for that check unless ``--skip_data_check``; jobs that
``python`` on PATH cannot run; a refusal is printed before, and instead of, the list
of jobs. A preset that breaks the fairness rules of ``experiments.presets.fairness_problems``
gets a warning. It ends with how many jobs are done, incomplete and not launched, and
exits 1 when a job it waited for failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Sequence

from domainbed_dge.plugin.host import require_domainbed

require_domainbed()

import numpy as np  # noqa: E402
from domainbed import algorithms, command_launchers, datasets  # noqa: E402
from domainbed.scripts import sweep as domainbed_sweep  # noqa: E402

from domainbed_dge._pth import HOOK_PROBE  # noqa: E402
from domainbed_dge.experiments.batch_guard import check_batch_sizes  # noqa: E402
from domainbed_dge.experiments.jobs import SweepJob, Variant, job_hparams, make_jobs  # noqa: E402
from domainbed_dge.experiments.presets import MODES, Preset, PresetError, fairness_problems, load_preset  # noqa: E402
from domainbed_dge.plugin import launchers, methods  # noqa: E402
from domainbed_dge.plugin.hparams import HParamError  # noqa: E402

COMMANDS = ("launch", "delete_incomplete", "list")
#: Launchers that run their commands one after the other before returning: the sweep
#: hands them one command at a time, to show which job is running.
SERIAL_LAUNCHERS = ("local", "dummy")
#: Launchers that run nothing, so need no working ``python`` on PATH.
DRY_LAUNCHERS = ("dummy",)
#: DomainBed's launchers that return once every job has ended (``submitit`` may too).
WAITING_LAUNCHERS = ("local", "multi_gpu")
#: Where no option and no preset says otherwise: DomainBed's sweep defaults.
DEFAULTS = {
    "mode": "sdg",
    "n_hparams_from": 0,
    "n_hparams": 20,
    "n_trials": 3,
    "holdout_fraction": 0.2,
    "single_test_envs": False,
    "task": "domain_generalization",
}
#: Run by ``python`` from PATH, as the jobs are: exit 0 when DomainBed imports and the
#: plugin's start-up hook is installed, 3 when the hook is missing.
INTERPRETER_PROBE = "import domainbed; " + HOOK_PROBE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m domainbed_dge.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SDG results: python -m domainbed_dge.collect_results --input_dir OUTPUT_DIR",
    )
    parser.add_argument("command", choices=COMMANDS, help="launch the jobs not yet launched, list every job's state, or delete the incomplete ones (required, no default)")
    parser.add_argument("--preset", help="JSON preset (sweeps/*.json) giving the experiment's settings and variants (default: none)")
    parser.add_argument("--mode", choices=MODES,
                        help="sdg: one job per source environment; mdg: DomainBed's test environments (default: the preset's, else sdg)")
    parser.add_argument("--datasets", nargs="+", help="(default: the preset's, else DomainBed's non-debug datasets)")
    parser.add_argument("--algorithms", nargs="+",
                        help="with a preset: keep these algorithms' variants (default: every algorithm DomainBed knows, or all the preset's variants)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="with a preset: keep only the variants of these names (default: all)")
    parser.add_argument("--task", choices=("domain_generalization", "domain_adaptation"),
                        help="(default: domain_generalization)")
    parser.add_argument("--n_hparams_from", type=int, help="first hparams_seed (default: the preset's, else 0: the registry's defaults)")
    parser.add_argument("--n_hparams", type=int, help="hparams_seeds run are [n_hparams_from, n_hparams) (default: the preset's, else 20)")
    parser.add_argument("--output_dir", required=True, help="the sweep's directory, one subdirectory per job (required, no default)")
    parser.add_argument("--data_dir", required=True, help="DomainBed's --data_dir for every job (required, no default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order in which jobs are launched (default: %(default)s)")
    parser.add_argument("--n_trials", type=int, help="trial seeds 0 .. n_trials - 1 (default: the preset's, else 3)")
    parser.add_argument("--command_launcher", choices=sorted(command_launchers.REGISTRY), help="how jobs run; required for launch (default: none)")
    parser.add_argument("--steps", type=int, help="training steps per job (default: the preset's, else the dataset's)")
    parser.add_argument("--checkpoint_freq", type=int,
                        help="steps between checkpoints, passed to train.py (default: the preset's, else the dataset's)")
    parser.add_argument("--hparams", help="JSON object of hyperparameters for every job, merged into each variant's (default: none)")
    parser.add_argument("--holdout_fraction", type=float, help="share of each environment held out for validation (default: the preset's, else 0.2)")
    parser.add_argument("--sources", type=int, nargs="+",
                        help="SDG only: the source environments to run, by index (default: the preset's, else all)")
    parser.add_argument("--single_test_envs", action="store_true", default=None,
                        help="MDG only: one test environment per job (default: the preset's, else off)")
    parser.add_argument("--skip_confirmation", action="store_true", help="launch or delete without asking (default: ask)")
    parser.add_argument("--skip_data_check", action="store_true",
                        help="launch even when the batch-size check cannot read the data (clusters where only the "
                             "compute nodes see --data_dir; default: refuse)")
    return parser


def resolve_jobs(args: argparse.Namespace, preset: Preset | None) -> list[SweepJob]:
    """The sweep's jobs from the options, the preset's settings where no option is given,
    and DomainBed's defaults where neither is. Raises ValueError naming a bad option."""

    def setting(name: str):
        value = getattr(args, name)
        if value is None and preset is not None:
            value = getattr(preset, name, None)
        return DEFAULTS.get(name) if value is None else value

    overrides = _parse_hparams(args.hparams)
    if args.variants and preset is None:
        raise ValueError("--variants needs --preset (it picks variants of the preset by name)")
    if preset is None:
        modes = (setting("mode"),)
        names = dict.fromkeys(args.algorithms or algorithms.ALGORITHMS)  # in order, without repeats
        variants = [Variant(name, name, args.hparams) for name in names]
        dataset_names = list(dict.fromkeys(args.datasets or domainbed_sweep.DATASETS))
    else:
        modes = (args.mode,) if args.mode else preset.modes
        variants = [
            Variant(v.name, v.algorithm, v.hparams_json(preset.hparams, overrides, preset.targets))
            for v in preset.variants
            if not args.algorithms or v.algorithm in args.algorithms
        ]
        if not variants:
            raise ValueError(f"--algorithms {' '.join(args.algorithms)} keeps none of the preset's variants "
                             f"(their algorithms: {', '.join(sorted({v.algorithm for v in preset.variants}))})")
        if args.variants:
            variants = _pick_variants(variants, args.variants)
        dataset_names = list(dict.fromkeys(args.datasets or preset.datasets))
    _check_names("dataset", dataset_names, datasets.DATASETS)
    _check_names("algorithm", [v.algorithm for v in variants], algorithms.ALGORITHMS)
    n_hparams_from, n_hparams = setting("n_hparams_from"), setting("n_hparams")
    if not 0 <= n_hparams_from < n_hparams:
        raise ValueError(f"hparams seeds [{n_hparams_from}, {n_hparams}) are empty: "
                         "need 0 <= --n_hparams_from < --n_hparams")
    if setting("n_trials") < 1:
        raise ValueError(f"--n_trials {setting('n_trials')} is not allowed; allowed: an integer >= 1")
    for name in ("steps", "checkpoint_freq"):  # DomainBed's train reads 0 as "the dataset's default"
        if setting(name) is not None and setting(name) < 1:
            raise ValueError(f"--{name} {setting(name)} is not allowed; allowed: an integer >= 1 "
                             "(or leave it out for the dataset's default)")
    if not 0 < setting("holdout_fraction") < 1:
        raise ValueError(f"--holdout_fraction {setting('holdout_fraction')} is not allowed; allowed: a number in (0, 1)")
    sources = args.sources if args.sources is not None else (None if preset is None else preset.sources)
    if args.sources is not None and "sdg" not in modes:
        raise ValueError("--sources applies to --mode sdg only (MDG trains on every environment but the test ones)")
    targets = () if preset is None else preset.targets or ()
    if args.sources is not None and set(args.sources) & set(targets):
        raise ValueError(f"--sources {' '.join(map(str, args.sources))} is not allowed; allowed: environments "
                         f"that are not the preset's targets {list(targets)}")
    if args.single_test_envs and "mdg" not in modes:
        raise ValueError("--single_test_envs applies to --mode mdg only (SDG has one job per source environment)")
    jobs = []
    for mode in modes:
        jobs += make_jobs(
            mode=mode,
            variants=variants,
            dataset_names=dataset_names,
            n_trials=setting("n_trials"),
            n_hparams_from=n_hparams_from,
            n_hparams=n_hparams,
            steps=setting("steps"),
            data_dir=args.data_dir,
            output_dir=args.output_dir,
            task=setting("task"),
            holdout_fraction=setting("holdout_fraction"),
            single_test_envs=mode == "mdg" and setting("single_test_envs"),
            sources=sources,
            checkpoint_freq=setting("checkpoint_freq"),
        )
    return jobs


def _pick_variants(variants: list[Variant], names: Sequence[str]) -> list[Variant]:
    """The variants named, in the order named."""
    by_name = {variant.name: variant for variant in variants}
    for name in names:
        if name not in by_name:
            raise ValueError(f"--variants {name!r} is not one of the preset's variants{methods.suggestion(name, by_name)} "
                             f"Allowed: {', '.join(repr(known) for known in by_name)}")
    return [by_name[name] for name in dict.fromkeys(names)]


def _parse_hparams(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--hparams {text!r} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"--hparams {text!r} is not allowed; allowed: a JSON object")
    return value


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}{methods.suggestion(unknown[0], known)} "
                         f"Allowed: {', '.join(known)}")


def summary(jobs: Sequence[SweepJob]) -> str:
    """How many jobs are done, incomplete and not launched."""
    Job = domainbed_sweep.Job
    count = {state: sum(job.state == state for job in jobs) for state in (Job.DONE, Job.INCOMPLETE, Job.NOT_LAUNCHED)}
    return (f"{len(jobs)} jobs: {count[Job.DONE]} done, {count[Job.INCOMPLETE]} incomplete, "
            f"{count[Job.NOT_LAUNCHED]} not launched.")


def print_jobs(jobs: Sequence[SweepJob]) -> None:
    for job in jobs:
        print(f"{job.state}: {job.job.output_dir} {job.describe()}")
    print(summary(jobs))


def check_job_interpreter() -> str | None:
    """``None`` when ``python`` on PATH, which the jobs' commands run, imports DomainBed
    and has this plugin's start-up hook; otherwise why not."""
    try:
        result = subprocess.run(["python", "-c", INTERPRETER_PROBE], capture_output=True, text=True)
    except FileNotFoundError:
        return "there is no `python` on PATH"
    if result.returncode == 0:
        return None
    if result.returncode == 3:
        return ("domainbed_dge's start-up hook does not run there (pip install domainbed-dge there, then "
                "python -m domainbed_dge.setup_domainbed /path/to/DomainBed, which writes the hook if the install left it out)")
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"it exited {result.returncode}"


def confirm(question: str) -> bool:
    try:
        answer = input(f"{question} (y/n) ")
    except EOFError:
        answer = ""
    return answer.strip().lower().startswith("y")


def check_hparams(jobs: Sequence[SweepJob]) -> str | None:
    """The first job whose merged hyperparameters its algorithm would refuse (an unknown
    key or a value not allowed; for DomainBed's own algorithms, the plugin's keys: see
    ``plugin.host_algorithms``), as an error line; ``None`` when all pass."""
    from domainbed_dge.plugin.checks import known_hparams
    from domainbed_dge.plugin.host_algorithms import check_host_hparams, is_domainbed_algorithm

    for job in jobs:
        algorithm = job.train_args["algorithm"]
        hparams = job_hparams(job.train_args)
        try:
            if algorithm in methods.NAMES:
                methods.validate(algorithm, hparams, known=known_hparams(algorithm))
            elif is_domainbed_algorithm(cls := getattr(algorithms, algorithm, None)):
                num_environments = len(datasets.get_dataset_class(job.train_args["dataset"]).ENVIRONMENTS)
                check_host_hparams(cls, hparams, num_environments - len(job.train_args["test_envs"]))
        except HParamError as error:
            return f"{job.describe()}: {error}"
    return None


def waits_for_jobs(launcher: str) -> bool:
    """Whether ``launcher`` returns only once every job it started has ended."""
    if launcher == "submitit":
        return launchers.waits_for_jobs()
    return launcher in WAITING_LAUNCHERS


def refuse_unlaunchable(to_launch: Sequence[SweepJob], args: argparse.Namespace) -> None:
    """Exit with one error when the jobs cannot run: hyperparameters the algorithm would
    refuse, a batch larger than a training split, data the batch-size check cannot read
    (unless ``--skip_data_check``), no usable ``python`` for the jobs, or a bad launcher
    setting."""
    bad = check_hparams(to_launch)
    if bad is not None:
        raise SystemExit(f"error: refusing to launch: {bad}")
    check = check_batch_sizes([job.train_args for job in to_launch], args.data_dir, report=print)
    if check.unreadable and not args.skip_data_check:
        raise SystemExit(
            "error: refusing to launch: the batch-size check cannot read the data:\n  " + "\n  ".join(check.unreadable)
            + "\nFix --data_dir, or pass --skip_data_check where only the machines that run the jobs see the data."
        )
    for line in check.unreadable:
        print(f"batch-size check skipped (--skip_data_check): {line}")
    if check.problems:
        raise SystemExit(
            "error: refusing to launch: a batch larger than a training split makes DomainBed's "
            "InfiniteDataLoader spin forever:\n  " + "\n  ".join(check.problems) +
            "\nLower batch_size (e.g. --hparams '{\"batch_size\": 8}'), use other hparams seeds, or more data."
        )
    if args.command_launcher not in DRY_LAUNCHERS:
        why_not = check_job_interpreter()
        if why_not is not None:
            raise SystemExit(
                f"error: the jobs run `python -m domainbed.scripts.train ...` with `python` from PATH, which "
                f"cannot run them: {why_not}. Activate the environment where domainbed_dge is installed and "
                "DomainBed is importable."
            )
    if args.command_launcher == "submitit":
        problem = launchers.configuration_problem()
        if problem is not None:
            raise SystemExit(f"error: refusing to launch: {problem}")


def launch(jobs: Sequence[SweepJob], args: argparse.Namespace) -> int:
    """Check, then list and launch the jobs never launched; a refusal comes before the
    list. The exit status: 1 when a job it waited for failed."""
    to_launch = [job for job in jobs if job.state == domainbed_sweep.Job.NOT_LAUNCHED]
    if to_launch:
        refuse_unlaunchable(to_launch, args)
    print_jobs(jobs)
    incomplete = sum(job.state == domainbed_sweep.Job.INCOMPLETE for job in jobs)
    if incomplete:
        print(f"{incomplete} incomplete jobs are not relaunched (they may still be running); "
              "`delete_incomplete` removes them so that `launch` redoes them.")
    if not to_launch:
        print("Nothing to launch.")
        return 0
    print(f"About to launch {len(to_launch)} jobs with the {args.command_launcher!r} launcher.")
    if not args.skip_confirmation and not confirm("Are you sure?"):
        print("Nothing launched.")
        return 0
    order = np.random.RandomState(args.seed).permutation(len(to_launch))
    to_launch = [to_launch[index] for index in order]
    for job in to_launch:
        os.makedirs(job.job.output_dir, exist_ok=True)
    launcher = command_launchers.REGISTRY[args.command_launcher]
    if args.command_launcher in SERIAL_LAUNCHERS:
        start = time.time()
        for index, job in enumerate(to_launch, 1):
            print(f"[{index}/{len(to_launch)}, {time.time() - start:.0f} s] {job.describe()} -> {job.job.output_dir}",
                  flush=True)
            launcher([job.job.command_str])
    else:
        launcher([job.job.command_str for job in to_launch])
    print(f"Launched {len(to_launch)} jobs.")
    if args.command_launcher in DRY_LAUNCHERS or not waits_for_jobs(args.command_launcher):
        return 0
    failed = [job for job in to_launch if job.rescanned().state != domainbed_sweep.Job.DONE]
    if failed:
        print(f"error: {len(failed)} of the {len(to_launch)} jobs launched failed; their logs:", file=sys.stderr)
        for job in failed:
            print(f"  {os.path.join(job.job.output_dir, 'err.txt')} ({job.describe()})", file=sys.stderr)
        return 1
    return 0


def delete_incomplete(jobs: Sequence[SweepJob], args: argparse.Namespace) -> None:
    to_delete = [job.job for job in jobs if job.state == domainbed_sweep.Job.INCOMPLETE]
    print(f"About to delete {len(to_delete)} incomplete jobs.")
    if not to_delete:
        return
    if not args.skip_confirmation and not confirm("Are you sure?"):
        print("Nothing deleted.")
        return
    domainbed_sweep.Job.delete(to_delete)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "launch" and args.command_launcher is None:
        parser.error("launch needs --command_launcher (one of: " + ", ".join(sorted(command_launchers.REGISTRY)) + ")")
    try:
        preset = load_preset(args.preset) if args.preset else None
        jobs = resolve_jobs(args, preset)
    except (PresetError, ValueError) as error:
        parser.error(str(error))
    if preset is not None:
        print(f"Preset {args.preset}: {preset.paper + ': ' if preset.paper else ''}{preset.description}")
        for problem in fairness_problems(preset):
            print(f"warning: not a like-with-like comparison: {problem}", file=sys.stderr)
    status = 0
    if args.command == "launch":
        status = launch(jobs, args)  # it lists the jobs once its checks pass
    else:
        print_jobs(jobs)
        if args.command == "delete_incomplete":
            delete_incomplete(jobs, args)
    if args.command != "list":
        print("Now: " + summary([job.rescanned() for job in jobs]))
    return status


if __name__ == "__main__":
    sys.exit(main())
