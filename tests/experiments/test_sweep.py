"""The sweep: SDG and MDG jobs as DomainBed's own, presets, the batch-size guard, and a
real sweep end to end (launch through submitit, resume, collect_results, plots)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_results, subprocess_env
from domainbed_dge.experiments.presets import VARIANT_HPARAM, PresetError, parse_preset

pytestmark = pytest.mark.domainbed

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "sweeps").glob("*.json"))
#: Jobs per preset: variants x (sources in SDG, or test environments in MDG) x trials.
PRESET_JOBS = {
    "sdg_pacs": 18 * 4 * 5, "sdg_vlcs": 17 * 4 * 5, "sdg_officehome": 17 * 4 * 5, "sdg_domainnet": 17 * 5 * 5,
    "mdg": 17 * (4 + 4 + 4 + 6) * 5, "ablation_components": 3 * 3 * 4 * 5, "ablation_num_views": 3 * 4 * 5,
    "gradavg_vs_dge": 3 * 2 * 3 * 4 * 5, "ablation_augment": 9 * 4 * 5, "sensitivity_random_ops": 7 * 3 * 4 * 5,
    "sensitivity_alpha": 9 * 4 * 5, "rotated_mnist_offline": 8 * 6 * 3, "rotated_mnist_fair_lr": 4 * 2 * 1,
    "rotated_mnist_fair": 27 * 2 * 3, "digits_fair_lr": 4 * 1 * 1, "digits_fair": 23 * 1 * 3,
}
#: The fair comparison's first rows, run at 1,000 and at 3,000 steps; later rows joined
#: the preset afterwards and run at 3,000 steps only.
FAIR_FIRST_ROWS = 11
TINY = ("--n_trials", "1", "--n_hparams", "1", "--steps", "2", "--hparams", '{"batch_size": 8}')


def sweep_env(**extra: str) -> dict[str, str]:
    """DomainBed importable, and this interpreter first on PATH: the jobs run `python`."""
    env = subprocess_env()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env or sweep_env(),
                          capture_output=True, text=True)


def resolve(*argv: str, data_dir: str = "D", output_dir: str = "O"):
    from domainbed_dge import sweep

    args = sweep.build_parser().parse_args(["list", "--data_dir", data_dir, "--output_dir", output_dir, *argv])
    preset = sweep.load_preset(args.preset) if args.preset else None
    return sweep.resolve_jobs(args, preset)


def test_sdg_makes_one_job_per_source_named_as_domainbed_names_them():
    from domainbed.lib import misc

    jobs = resolve("--datasets", "RotatedMNIST", "--algorithms", "DGE", "--n_trials", "2", "--n_hparams", "1")
    assert len(jobs) == 12
    assert sorted((j.train_args["trial_seed"], tuple(j.train_args["test_envs"])) for j in jobs) == sorted(
        (trial, tuple(e for e in range(6) if e != source)) for trial in range(2) for source in range(6))
    for job in jobs:
        args = {key: value for key, value in job.train_args.items() if key != "output_dir"}
        args_hash = hashlib.md5(json.dumps(args, sort_keys=True).encode()).hexdigest()
        assert job.job.output_dir == os.path.join("O", args_hash)
        assert args["seed"] == misc.seed_hash("RotatedMNIST", "DGE", args["test_envs"], 0, args["trial_seed"])
        assert job.job.command_str.startswith("python -m domainbed.scripts.train --algorithm DGE --data_dir D")
        assert f"--test_envs {' '.join(map(str, args['test_envs']))} " in job.job.command_str
        assert job.state == "Not launched"


@pytest.mark.parametrize("single_test_envs", [False, True])
def test_mdg_jobs_are_domainbeds_own(single_test_envs):
    from domainbed.scripts import sweep as domainbed_sweep

    flag = ("--single_test_envs",) if single_test_envs else ()
    jobs = resolve("--mode", "mdg", "--datasets", "VLCS", "--algorithms", "ERM", "DGE", "--n_hparams", "2",
                   "--hparams", '{"lr": 0.001}', *flag)
    expected = domainbed_sweep.make_args_list(
        n_trials=3, dataset_names=["VLCS"], algorithms=["ERM", "DGE"], n_hparams_from=0, n_hparams=2, steps=None,
        data_dir="D", task="domain_generalization", holdout_fraction=0.2, single_test_envs=single_test_envs,
        hparams='{"lr": 0.001}')
    assert sorted(json.dumps(j.train_args, sort_keys=True) for j in jobs) == sorted(
        json.dumps(domainbed_sweep.Job(args, "O").train_args, sort_keys=True) for args in expected)


def test_single_test_envs_is_refused_in_sdg_unless_from_a_preset_run_as_sdg():
    with pytest.raises(ValueError, match="--single_test_envs applies to --mode mdg only"):
        resolve("--datasets", "VLCS", "--single_test_envs")
    # Table 8's preset runs SDG and MDG with single_test_envs; --mode sdg keeps its SDG half.
    jobs = resolve("--preset", str(REPO / "sweeps" / "gradavg_vs_dge.json"), "--mode", "sdg")
    assert len(jobs) == PRESET_JOBS["gradavg_vs_dge"] // 2
    assert all(len(job.train_args["test_envs"]) == 3 for job in jobs)


@pytest.mark.parametrize("path", PRESETS, ids=[path.stem for path in PRESETS])
def test_presets_expand_to_the_papers_sweeps(path):
    assert {p.stem for p in PRESETS} == set(PRESET_JOBS)
    jobs = resolve("--preset", str(path))
    assert len(jobs) == PRESET_JOBS[path.stem]
    labels = set()
    for job in jobs:
        hparams = json.loads(job.train_args.get("hparams") or "{}")
        if job.variant.name == job.variant.algorithm:
            assert VARIANT_HPARAM not in hparams
        else:
            assert hparams[VARIANT_HPARAM] == job.variant.name
        labels.add(hparams.get(VARIANT_HPARAM, job.variant.algorithm))
    assert len(labels) == len({job.variant.name for job in jobs})  # every variant has its own row
    if not path.stem.startswith(("rotated_mnist", "digits")):
        assert all(json.loads(job.train_args["hparams"])["resnet18"] is True for job in jobs)
        assert all("steps" not in job.train_args for job in jobs)


def test_rotated_mnist_preset_and_command_line_overrides():
    preset = str(REPO / "sweeps" / "rotated_mnist_offline.json")
    jobs = resolve("--preset", preset)
    assert {job.train_args["steps"] for job in jobs} == {5001}
    assert {job.train_args["trial_seed"] for job in jobs} == {0, 1, 2}
    jobs = resolve("--preset", preset, "--algorithms", "DGE", "--n_trials", "1", "--steps", "2",
                   "--hparams", '{"batch_size": 8, "dge_adjust": true}')
    assert sorted({job.variant.name for job in jobs}) == ["DGE", "DGE (adjust off)", "DGE (reweight off)"]
    assert len(jobs) == 3 * 6 and {job.train_args["steps"] for job in jobs} == {2}
    hparams = {job.variant.name: json.loads(job.train_args["hparams"]) for job in jobs}
    shared = {"dge_optimizer": "adam", "lr": 0.001, "dge_momentum": 0.9, "weight_decay": 0.0}
    assert hparams["DGE"] == {**shared, "batch_size": 8, "dge_adjust": True}
    assert hparams["DGE (adjust off)"] == {**shared, "batch_size": 8, "dge_adjust": False,
                                          VARIANT_HPARAM: "DGE (adjust off)"}


def test_domainnet_preset_runs_its_sources_and_tables_its_one_target():
    jobs = resolve("--preset", str(REPO / "sweeps" / "sdg_domainnet.json"), "--n_trials", "1")
    sources = {next(env for env in range(6) if env not in job.train_args["test_envs"]) for job in jobs}
    assert sources == {0, 1, 2, 3, 5}
    assert all(json.loads(job.train_args["hparams"])["sweep_targets"] == [4] for job in jobs)


def test_sources_on_the_command_line_replace_the_presets():
    preset = str(REPO / "sweeps" / "rotated_mnist_fair.json")
    by_preset = resolve("--preset", preset)
    all_six = resolve("--preset", preset, "--sources", "0", "1", "2", "3", "4", "5")
    assert len(all_six) == 3 * len(by_preset)
    # The preset's own sources give the same jobs (same directories) either way.
    assert {job.job.output_dir for job in by_preset} < {job.job.output_dir for job in all_six}
    with pytest.raises(ValueError, match="source environment 6 is not allowed; allowed: 0 .. 5"):
        resolve("--preset", preset, "--sources", "6")
    with pytest.raises(ValueError, match="--sources 4 is not allowed; allowed: environments that are not the preset's targets \\[4\\]"):
        resolve("--preset", str(REPO / "sweeps" / "sdg_domainnet.json"), "--sources", "4")
    with pytest.raises(ValueError, match="--sources applies to --mode sdg only"):
        resolve("--datasets", "PACS", "--mode", "mdg", "--sources", "0")


def test_variants_pick_rows_of_a_preset_by_name():
    preset = str(REPO / "sweeps" / "rotated_mnist_fair.json")
    jobs = resolve("--preset", preset, "--variants", "GradAvg x K", "Baseline")
    assert [job.variant.name for job in jobs] == ["GradAvg x K"] * 6 + ["Baseline"] * 6
    assert {job.job.output_dir for job in jobs} < {job.job.output_dir for job in resolve("--preset", preset)}
    with pytest.raises(ValueError, match="--variants 'GradAvg xK' is not one of the preset's variants; "
                                         "did you mean 'GradAvg x K'\\? Allowed: 'Baseline', "):
        resolve("--preset", preset, "--variants", "GradAvg xK")
    with pytest.raises(ValueError, match="--variants needs --preset"):
        resolve("--datasets", "PACS", "--variants", "DGE")


def assert_committed_jobs_are_finished(sweep_dir: Path) -> None:
    """Every job folder git tracks under ``sweep_dir`` has its results.jsonl and done."""
    tracked = subprocess.run(["git", "ls-files", str(sweep_dir)], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout:
        files = {Path(line).relative_to(sweep_dir.relative_to(REPO)) for line in tracked.stdout.splitlines()}
        committed = {path.parent.name for path in files}
        assert {Path(job, name) for job in committed for name in ("results.jsonl", "done")} <= files


@pytest.mark.parametrize("folder, options", [
    ("sweep", ()),
    ("sweep_1000", ("--steps", "1000", "--checkpoint_freq", "100")),
])
def test_the_committed_fair_comparison_is_the_presets_sweep(folder, options):
    """reports/rotated_mnist_fair/<folder> holds every job of the preset's first rows
    under the command the report gives for it, finished; in ``sweep`` the later rows'
    jobs as they finish; and no other job: a preset change the committed results do
    not follow fails here, and so does a committed job without its ``done``."""
    sweep_dir = REPO / "reports" / "rotated_mnist_fair" / folder
    preset = str(REPO / "sweeps" / "rotated_mnist_fair.json")
    first_rows = [variant.name for variant in parse_preset(json.loads(Path(preset).read_text())).variants]
    first_rows = first_rows[:FAIR_FIRST_ROWS]
    first = resolve("--preset", preset, *options, "--variants", *first_rows, data_dir="./data",
                    output_dir=str(sweep_dir))
    assert len(first) == FAIR_FIRST_ROWS * 2 * 3
    assert {job.state for job in first} == {"Done"}
    jobs = first if folder != "sweep" else resolve("--preset", preset, data_dir="./data", output_dir=str(sweep_dir))
    directories = {path.name for path in sweep_dir.iterdir()}
    assert directories <= {Path(job.job.output_dir).name for job in jobs}
    assert_committed_jobs_are_finished(sweep_dir)


@pytest.mark.parametrize("folder, preset", [("sweep", "digits_fair"), ("lr_search", "digits_fair_lr")])
def test_the_committed_digits_jobs_are_the_presets_and_finished(folder, preset):
    """reports/digits_fair/<folder> holds only jobs of the preset (as the report launches
    them, from ``--data_dir ./data``), each committed with its ``done``."""
    sweep_dir = REPO / "reports" / "digits_fair" / folder
    jobs = resolve("--preset", str(REPO / "sweeps" / f"{preset}.json"), data_dir="./data", output_dir=str(sweep_dir))
    directories = {path.name for path in sweep_dir.iterdir()} if sweep_dir.exists() else set()
    assert directories and directories <= {Path(job.job.output_dir).name for job in jobs}
    assert_committed_jobs_are_finished(sweep_dir)


def test_checkpoint_freq_from_a_preset_reaches_train_py():
    jobs = resolve("--preset", str(REPO / "sweeps" / "rotated_mnist_fair_lr.json"))
    assert {job.train_args["checkpoint_freq"] for job in jobs} == {100}
    assert "--checkpoint_freq 100" in jobs[0].job.command_str


VALID_PRESET = {"description": "d", "modes": ["sdg"], "datasets": ["PACS"], "n_trials": 1, "n_hparams_from": 0,
                "n_hparams": 1, "steps": None, "variants": [{"name": "DGE", "algorithm": "DGE"}]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"modes": ["sdg", "loo"]}, "modes = ['sdg', 'loo'] is not allowed; allowed: a list of distinct modes"),
        ({"n_trials": 0}, "n_trials = 0 is not allowed; allowed: an integer >= 1"),
        ({"n_hparams": 0}, "n_hparams = 0 is not allowed; allowed: an integer > n_hparams_from"),
        ({"single_test_envs": True},
         "single_test_envs = True is not allowed; allowed: true only when modes include mdg"),
        ({"trials": 3}, "unknown key(s) trials; allowed: description"),
        ({"variants": [{"name": "A", "algorithm": "DGE"}, {"name": "A", "algorithm": "ERM"}]},
         "variant names must be distinct; repeated: A"),
        ({"variants": [{"name": "A", "algorithm": "DGE", "hparams": {VARIANT_HPARAM: "B"}}]},
         "variants[0].hparams sets 'sweep_variant'"),
        ({"variants": [{"name": "A", "algo": "DGE"}]}, "variants[0] has unknown key(s) algo"),
    ],
)
def test_bad_presets_are_refused_naming_the_key(change, message):
    with pytest.raises(PresetError) as error:
        parse_preset({**VALID_PRESET, **change}, "p.json")
    assert str(error.value).startswith("preset p.json: ")
    assert message in str(error.value)


def test_launch_checks_the_plugins_keys_on_domainbeds_algorithms():
    from domainbed_dge.sweep import check_hparams

    def first_refusal(*argv):
        return check_hparams(resolve("--datasets", "RotatedMNIST", "--n_trials", "1", "--n_hparams", "1", *argv))

    assert first_refusal("--algorithms", "Mixup", "ERM", "--hparams", '{"dge_num_views": 3, "dge_optimizer": "sgd"}') \
        is None
    assert "'dge_num_vews' is not one of Mixup's; did you mean 'dge_num_views'?" in first_refusal(
        "--algorithms", "Mixup", "--hparams", '{"dge_num_vews": 3}')
    assert "'dge_num_views' = 3 is not allowed with 5 training environments" in first_refusal(
        "--algorithms", "Mixup", "--mode", "mdg", "--hparams", '{"dge_num_views": 3}')
    assert "MLDG: hyperparameter 'dge_optimizer' = 'sgd' is not allowed" in first_refusal(
        "--algorithms", "MLDG", "--hparams", '{"dge_optimizer": "sgd"}')


@pytest.mark.parametrize("path", PRESETS, ids=[path.stem for path in PRESETS])
def test_every_row_of_every_preset_passes_the_launch_check(path):
    from domainbed_dge.sweep import check_hparams

    jobs = {(job.variant.name, job.train_args["dataset"]): job for job in resolve("--preset", str(path))}
    assert check_hparams(list(jobs.values())) is None


#: The rows of the paper's Tables 1-5 ("Ours" is DGE), as its tables label them.
PAPER_ROWS = ("Baseline", "Mixup", "SelfReg", "RandConv", "Pro-RandConv", "Fish", "SagNet", "Agr-Rand", "Agr-Sum",
              "GSAM", "SAGM", "MixStyle", "PCGrad", "DGE")


@pytest.mark.parametrize("stem", ["sdg_pacs", "sdg_vlcs", "sdg_officehome", "sdg_domainnet", "mdg"])
def test_every_paper_preset_has_the_papers_rows(stem):
    from domainbed_dge.experiments.records import label_of

    preset = parse_preset(json.loads((REPO / "sweeps" / f"{stem}.json").read_text()))
    labels = {variant.name if variant.name != variant.algorithm else label_of(variant.algorithm)
              for variant in preset.variants}
    # DomainBed's rows carry their reading in SDG: "Mixup (views as domains)".
    found = {row for row in PAPER_ROWS if row in labels or f"{row} (views as domains)" in labels}
    assert found == set(PAPER_ROWS)


def test_unknown_algorithm_or_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown algorithm\\(s\\) NoSuchAlgorithm. Allowed: ERM"):
        resolve("--datasets", "PACS", "--algorithms", "NoSuchAlgorithm")
    with pytest.raises(ValueError, match="unknown dataset\\(s\\) PACs; did you mean 'PACS'\\? Allowed: "):
        resolve("--datasets", "PACs", "--algorithms", "ERM")


@pytest.mark.parametrize(
    "option, message",
    [
        (("--steps", "0"), "--steps 0 is not allowed; allowed: an integer >= 1"),
        (("--checkpoint_freq", "-5"), "--checkpoint_freq -5 is not allowed; allowed: an integer >= 1"),
        (("--holdout_fraction", "1.0"), "--holdout_fraction 1.0 is not allowed; allowed: a number in (0, 1)"),
    ],
)
def test_bad_lengths_and_splits_on_the_command_line_are_refused(option, message):
    with pytest.raises(ValueError) as error:
        resolve("--datasets", "RotatedMNIST", "--algorithms", "ERM", *option)
    assert str(error.value).startswith(message)


def test_mnist_sizes_are_those_of_the_built_dataset(offline_data):
    from domainbed import datasets, hparams_registry

    from domainbed_dge.experiments.batch_guard import environment_sizes, in_split_size

    built = datasets.RotatedMNIST(str(offline_data), [], hparams_registry.default_hparams("ERM", "RotatedMNIST"))
    assert environment_sizes("RotatedMNIST", str(offline_data)) == [len(env) for env in built] == [100] * 6
    assert in_split_size(100, 0.2) == 80 and in_split_size(833, 0.2) == 667


def test_oversized_batches_are_found_for_training_environments_only():
    from domainbed_dge.experiments.batch_guard import find_oversized

    def jobs(batch_size: int, test_envs: list[int]):
        return [{"dataset": "RotatedMNIST", "algorithm": "ERM", "hparams_seed": 0, "trial_seed": 0,
                 "test_envs": test_envs, "holdout_fraction": 0.2, "hparams": json.dumps({"batch_size": batch_size})}]

    sizes = lambda dataset: [100, 90, 100, 100, 100, 100]  # noqa: E731 (in-splits: 80, 72, ...)
    assert find_oversized(jobs(72, [0, 2, 3, 4, 5]), sizes) == {}
    (problem,) = find_oversized(jobs(73, [0, 2, 3, 4, 5]), sizes)
    assert (problem.environment, problem.environment_name, problem.batch_size, problem.in_split) == (1, "15", 73, 72)
    assert find_oversized(jobs(73, [1, 2, 3, 4, 5]), sizes) == {}  # env 1 is a test environment there
    # hparams_seed 0 without --hparams: the registry's default batch (64 for RotatedMNIST) fits 80 and 72.
    assert find_oversized([{**jobs(0, [1, 2, 3, 4, 5])[0], "hparams": None}], sizes) == {}


def test_launch_refuses_a_batch_larger_than_the_source_split(offline_data, tmp_path, capsys):
    from domainbed_dge import sweep

    with pytest.raises(SystemExit) as refused:
        sweep.main(["launch", "--datasets", "RotatedMNIST", "--algorithms", "ERM", "--n_trials", "1",
                    "--n_hparams", "1", "--hparams", '{"batch_size": 81}', "--data_dir", str(offline_data),
                    "--output_dir", str(tmp_path / "out"), "--command_launcher", "local", "--skip_confirmation"])
    assert "RotatedMNIST environment sizes [100, 100, 100, 100, 100, 100]" in capsys.readouterr().out
    assert str(refused.value).startswith("error: refusing to launch")
    for env, name in enumerate(["0", "15", "30", "45", "60", "75"]):
        assert (f"RotatedMNIST environment {env} ({name!r}): batch_size 81 exceeds its training (in) split of 80 "
                "examples (100 examples, holdout_fraction 0.2); 1 job(s)") in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_refusal_comes_before_and_instead_of_the_list_of_jobs(tmp_path, capsys, monkeypatch):
    """A wrong --data_dir: the refusal names the folder and the command that writes MNIST
    there, after no line per job, and nothing is created."""
    from domainbed_dge import sweep

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        sweep.main(["launch", "--datasets", "RotatedMNIST", "--algorithms", "ERM", *TINY, "--data_dir", "dta",
                    "--output_dir", "out", "--command_launcher", "local", "--skip_confirmation"])
    assert "Not launched" not in capsys.readouterr().out
    assert str(refused.value).startswith("error: refusing to launch: the batch-size check cannot read the data")
    assert f"{Path.cwd() / 'dta'} has no MNIST/raw folder" in str(refused.value)
    assert "python -m domainbed_dge.offline_data --data_dir dta" in str(refused.value)
    assert os.listdir(tmp_path) == []


def test_a_bad_launcher_setting_is_refused_before_any_job_folder_is_made(offline_data, tmp_path, monkeypatch):
    from domainbed_dge import sweep

    monkeypatch.setenv("DGE_SUBMITIT_GPUS", "x")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), sweep_env()["PATH"]]))
    monkeypatch.setenv("PYTHONPATH", sweep_env()["PYTHONPATH"])
    argv = ["launch", "--datasets", "RotatedMNIST", "--algorithms", "ERM", *TINY, "--data_dir", str(offline_data),
            "--output_dir", str(tmp_path / "out"), "--command_launcher", "submitit", "--skip_confirmation"]
    with pytest.raises(SystemExit) as refused:
        sweep.main(argv)
    assert str(refused.value) == ("error: refusing to launch: DGE_SUBMITIT_GPUS='x' is not allowed; "
                                  "allowed: an integer >= 0")
    assert not (tmp_path / "out").exists()  # so a second launch, fixed, starts every job


def test_jobs_need_a_python_on_path_with_domainbed_and_the_plugin(tmp_path, monkeypatch):
    from domainbed_dge.sweep import check_job_interpreter

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'domainbed'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert check_job_interpreter() == "ModuleNotFoundError: No module named 'domainbed'"
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), sweep_env()["PATH"]]))
    monkeypatch.setenv("PYTHONPATH", sweep_env()["PYTHONPATH"])
    assert check_job_interpreter() is None


def test_dummy_launch_shows_progress_then_delete_incomplete_cleans_up(tmp_path, capsys):
    from domainbed_dge import sweep

    common = ("--datasets", "Debug28", "--algorithms", "ERM", *TINY, "--data_dir", str(tmp_path / "data"),
              "--output_dir", str(tmp_path / "out"), "--skip_confirmation")
    launched = run_cli("domainbed_dge.sweep", "launch", *common, "--command_launcher", "dummy", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    progress = [line for line in launched.stdout.splitlines() if re.match(r"\[\d/3, \d+ s\] Debug28 ERM", line)]
    assert [line.split(",")[0] for line in progress] == ["[1/3", "[2/3", "[3/3"]
    assert launched.stdout.count("Dummy launcher: python -m domainbed.scripts.train") == 3
    assert "Now: 3 jobs: 0 done, 3 incomplete, 0 not launched." in launched.stdout
    sweep.main(["delete_incomplete", *common])
    printed = capsys.readouterr().out
    assert "Deleted 3 jobs!" in printed
    assert "Now: 3 jobs: 0 done, 0 incomplete, 3 not launched." in printed
    assert os.listdir(tmp_path / "out") == []


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A real SDG sweep of DomainBed's Debug28 (3 environments): the labelled variant
    "DGE (adjust off)", one trial, 2 steps, run through the submitit launcher with two
    local jobs at a time. Returns (work dir, output dir, launch's stdout)."""
    work = tmp_path_factory.mktemp("sweep")
    preset = work / "tiny.json"
    preset.write_text(json.dumps({
        "description": "tiny", "modes": ["sdg"], "datasets": ["Debug28"], "n_trials": 1, "n_hparams_from": 0,
        "n_hparams": 1, "steps": 2, "hparams": {"batch_size": 8},
        "variants": [{"name": "DGE (adjust off)", "algorithm": "DGE", "hparams": {"dge_adjust": False}}],
    }))
    env = sweep_env(DGE_SUBMITIT_CLUSTER="local", DGE_SUBMITIT_FOLDER=str(work / "logs" / "%j"),
                    DGE_SUBMITIT_ARRAY_PARALLELISM="2")
    result = run_cli("domainbed_dge.sweep", "launch", "--preset", str(preset), "--data_dir", str(work / "data"),
                     "--output_dir", str(work / "out"), "--command_launcher", "submitit", "--skip_confirmation",
                     cwd=work, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, work / "out", result.stdout


def test_sweep_runs_every_job_through_submitit(finished_sweep):
    work, out, stdout = finished_sweep
    assert "3 jobs: 0 done, 0 incomplete, 3 not launched." in stdout
    assert "submitit: 3 jobs ended, 3 succeeded, 0 failed" in stdout
    assert "Now: 3 jobs: 3 done, 0 incomplete, 0 not launched." in stdout
    records = [read_results(job_dir)[-1] for job_dir in sorted(out.iterdir())]
    assert len(records) == 3 and all(record["step"] == 1 for record in records)
    assert all(record["hparams"][VARIANT_HPARAM] == "DGE (adjust off)" for record in records)
    assert all(record["hparams"]["dge_adjust"] is False and record["dge_adjusted_pairs"] == 0 for record in records)
    assert sorted(tuple(record["args"]["test_envs"]) for record in records) == [(0, 1), (0, 2), (1, 2)]


def test_launch_again_resumes_without_rerunning_done_jobs(finished_sweep, capsys):
    from domainbed_dge import sweep

    work, out, _ = finished_sweep
    lines_before = {job_dir.name: len(read_results(job_dir)) for job_dir in out.iterdir()}
    sweep.main(["launch", "--preset", str(work / "tiny.json"), "--data_dir", str(work / "data"),
                "--output_dir", str(out), "--command_launcher", "local", "--skip_confirmation"])
    printed = capsys.readouterr().out
    assert "Nothing to launch." in printed
    assert "Now: 3 jobs: 3 done, 0 incomplete, 0 not launched." in printed
    assert {job_dir.name: len(read_results(job_dir)) for job_dir in out.iterdir()} == lines_before


def test_collect_results_and_plots_on_the_sweep(finished_sweep, capsys):
    from domainbed_dge import collect_results, plots

    work, out, _ = finished_sweep
    assert collect_results.main(["--input_dir", str(out)]) == 0
    block = capsys.readouterr().out.split(
        "-------- Debug28, source validation selection: accuracy by source domain\n")[1]
    rows = [re.split(r"\s{2,}", line) for line in block.split("\n\n")[0].splitlines()]
    expected = []
    for source in range(3):
        (job_dir,) = [d for d in out.iterdir() if source not in read_results(d)[0]["args"]["test_envs"]]
        records = read_results(job_dir)
        best = max(records, key=lambda r: (r[f"env{source}_out_acc"], -r["step"]))
        targets = records[0]["args"]["test_envs"]
        expected.append(100 * sum(best[f"env{t}_in_acc"] for t in targets) / len(targets))
    assert rows == [["Algorithm", "0", "1", "2", "Avg"],
                    ["DGE (adjust off)", *(f"{value:.1f} +/- 0.0 (1)" for value in expected),
                     f"{statistics.fmean(expected):.1f}"]]

    figures = work / "figures"
    assert plots.main(["--input_dir", str(out), "--output_dir", str(figures)]) == 0
    per_source = [f"Debug28_source-{s}_{kind}.png" for s in "012" for kind in ("curves", "diagnostics")]
    assert sorted(path.name for path in figures.iterdir()) == sorted(["Debug28_accuracy.png", *per_source])
