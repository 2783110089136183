"""Mistakes a newcomer makes get a clear answer, and no command reports success for
failed work: each case through the real command, as a subprocess."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run_module
from test_sweep import run_cli, sweep_env

REPO = Path(__file__).resolve().parents[2]
TINY = ("--n_trials", "1", "--n_hparams", "1", "--steps", "2")
WITHOUT_DOMAINBED = (
    "import os, runpy, sys\n"
    "sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or '.', 'domainbed'))]\n"
    "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.domainbed
def test_a_misspelled_key_is_refused_before_step_zero_with_the_nearest_name(train):
    result = train("DGE", "--hparams", '{"dge_alpah": 0.3}', name="typo", check=False)
    assert result.returncode != 0
    # train.py tees stderr into err.txt through its stdout.
    assert "hyperparameter 'dge_alpah' is not one of DGE's; did you mean 'dge_alpha'?" in result.stdout + result.stderr
    assert not (Path(result.args[result.args.index("--output_dir") + 1]) / "results.jsonl").exists()


@pytest.mark.domainbed
def test_domainbeds_own_keys_count_as_known_and_labels_are_accepted(train):
    output_dir = train("GradAvg", "--steps", "1", "--hparams",
                       '{"batch_size": 8, "sweep_variant": "Baseline", "dge_num_views": 1, "dge_augment": "none"}')
    assert (output_dir / "results.jsonl").exists()


@pytest.mark.domainbed
def test_an_unknown_algorithm_lists_the_registered_ones_and_the_nearest(train):
    result = train("dge", name="lower", check=False)
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "Algorithm not found: dge; did you mean 'DGE'? Registered algorithms: ERM," in last
    assert "PCGrad" in last


@pytest.mark.domainbed
def test_sweep_validates_every_job_before_launching_anything(offline_data, tmp_path):
    result = run_cli("domainbed_dge.sweep", "launch", "--datasets", "RotatedMNIST", "--algorithms", "DGE", *TINY,
                     "--hparams", '{"dge_alpha": 2}', "--data_dir", str(offline_data), "--output_dir",
                     str(tmp_path / "out"), "--command_launcher", "local", "--skip_confirmation", cwd=tmp_path)
    assert result.returncode != 0
    assert "refusing to launch" in result.stderr and "'dge_alpha' = 2 is not allowed" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.domainbed
def test_sweep_suggests_the_nearest_algorithm(tmp_path):
    result = run_cli("domainbed_dge.sweep", "list", "--datasets", "RotatedMNIST", "--algorithms", "PCgrad",
                     "--data_dir", "D", "--output_dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "unknown algorithm(s) PCgrad; did you mean 'PCGrad'?" in result.stderr


@pytest.mark.domainbed
def test_unreadable_data_is_refused_unless_skipped_and_failed_jobs_fail_the_sweep(tmp_path):
    args = ("launch", "--datasets", "RotatedMNIST", "--algorithms", "ERM", "--n_trials", "1", "--n_hparams", "1",
            "--steps", "1", "--sources", "0", "1", "--data_dir", str(tmp_path / "empty"),
            "--output_dir", str(tmp_path / "out"),
            "--command_launcher", "local", "--skip_confirmation")
    refused = run_cli("domainbed_dge.sweep", *args, cwd=tmp_path)
    assert refused.returncode != 0
    assert "the batch-size check cannot read the data" in refused.stderr and "--skip_data_check" in refused.stderr
    assert not (tmp_path / "out").exists()
    launched = run_cli("domainbed_dge.sweep", *args, "--skip_data_check", cwd=tmp_path)
    assert launched.returncode == 1
    assert "error: 2 of the 2 jobs launched failed; their logs:" in launched.stderr
    assert launched.stderr.count("err.txt") == 2
    assert "Now: 2 jobs: 0 done, 2 incomplete, 0 not launched." in launched.stdout


@pytest.mark.parametrize("module", ["domainbed_dge.sweep", "domainbed_dge.benchmark"])
def test_commands_that_need_domainbed_say_so_in_one_line(tmp_path, module):
    check = run_cli("domainbed_dge.setup_domainbed", "--check", cwd=tmp_path)  # with DomainBed: fine
    result = run_cli_without_domainbed(module, "--help", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "domainbed is not importable here. Run `python -m domainbed_dge.setup_domainbed /path/to/DomainBed`, "
        "set PYTHONPATH to the checkout, or run from its root."
    ]
    assert check.returncode == 0


def test_tables_without_domainbed_say_once_that_they_fall_back_to_env_labels(tmp_path):
    from test_collect_results import write_run

    for source in (0, 1):
        write_run(tmp_path / "sweep", f"s{source}", [([.5] * 6, [.5] * 6)], source=source, num_environments=6,
                  dataset="RotatedMNIST", trial_seed=0, hparams_seed=0, algorithm="ERM")
    result = run_cli_without_domainbed("domainbed_dge.collect_results", "--input_dir", str(tmp_path / "sweep"),
                                       cwd=tmp_path)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "labelled env0 .. env5: domainbed is not importable here" in warnings[0]
    assert "env0" in result.stdout


def run_cli_without_domainbed(module: str, *args: str, cwd: Path):
    import subprocess

    env = sweep_env()
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", WITHOUT_DOMAINBED, module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.domainbed
@pytest.mark.parametrize("module", ["sweep", "collect_results", "plots", "benchmark", "offline_data", "setup_domainbed"])
def test_every_option_of_every_command_states_its_default(module):
    import importlib

    parser = importlib.import_module(f"domainbed_dge.{module}").build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert "default" in text, f"{module} {'/'.join(action.option_strings) or action.dest}: {text!r}"


@pytest.mark.domainbed
def test_a_preset_that_is_not_like_with_like_gets_a_warning(tmp_path):
    preset = tmp_path / "unfair.json"
    preset.write_text(json.dumps({
        "description": "d", "modes": ["sdg"], "datasets": ["RotatedMNIST"], "n_trials": 1, "n_hparams_from": 0,
        "n_hparams": 1, "steps": 2, "hparams": {"lr": 0.01},
        "variants": [{"name": "Mixup", "algorithm": "Mixup", "hparams": {"dge_num_views": 3}},
                     {"name": "DGE", "algorithm": "DGE"}]}))
    result = run_cli("domainbed_dge.sweep", "list", "--preset", str(preset), "--data_dir", "D",
                     "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0
    assert "warning: not a like-with-like comparison: hparams do not set 'weight_decay'" in result.stderr
    assert "variant 'Mixup' has dge_num_views = 3: a row of DomainBed's Mixup says '(views as domains)'" \
        in result.stderr


@pytest.mark.domainbed
def test_a_data_dir_without_mnist_is_one_error_and_creates_no_data_folder(tmp_path):
    """DomainBed would try to download MNIST (leaving an empty dta/MNIST/raw); the
    start-up hook's guard refuses first, naming the folder and the command that fills it."""
    result = run_module("domainbed.scripts.train", "--algorithm", "ERM", "--dataset", "RotatedMNIST",
                        "--data_dir", "dta", "--test_envs", "1", "--output_dir", "out", "--steps", "1",
                        cwd=tmp_path, check=False)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last.startswith(f"domainbed_dge.plugin.data_guard.MNISTNotFound: RotatedMNIST reads MNIST from "
                           f"<data_dir>/MNIST/raw, but {tmp_path / 'dta'} has no MNIST/raw folder"), last
    assert "`python -m domainbed_dge.offline_data --data_dir dta`" in last
    assert not (tmp_path / "dta").exists()
