"""Every algorithm through DomainBed's own train.py on the offline RotatedMNIST, in SDG
and MDG, reproducibly; and DomainBed's own test suites with the plugin's algorithms."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import read_results, subprocess_env

pytestmark = pytest.mark.domainbed

ALGORITHMS = ["DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad"]
DIAGNOSTICS = ["loss", "grad_cosine", "direction_norm_ratio", "skipped_nonfinite"]
ONE_STEP = ("--steps", "1", "--hparams", '{"batch_size": 16}')


def accuracies(record):
    return {key: value for key, value in record.items() if key.endswith("_acc")}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sdg_training_is_reproducible(train, algorithm):
    first = read_results(train(algorithm, *ONE_STEP, name="first"))[-1]
    second = read_results(train(algorithm, *ONE_STEP, name="second"))[-1]
    assert sorted(accuracies(first)) == [f"env{e}_{split}_acc" for e in range(6) for split in ("in", "out")]
    assert accuracies(first) == accuracies(second)
    for key in DIAGNOSTICS:
        assert first[key] == second[key], key
    assert first["skipped_nonfinite"] == 0.0


def test_another_seed_gives_another_run(train):
    base = read_results(train("DGE", *ONE_STEP, name="seed0"))[-1]
    other = read_results(train("DGE", *ONE_STEP, "--seed", "1", name="seed1"))[-1]
    assert base["loss"] != other["loss"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mdg_training_uses_the_environments_as_domains(train, algorithm):
    record = read_results(train(algorithm, *ONE_STEP, test_envs=("4", "5")))[-1]
    for key in DIAGNOSTICS:
        assert isinstance(record[key], float), key
    if algorithm == "DGE":
        assert {f"dge_weight_{k}" for k in range(4)} <= set(record) and "dge_weight_4" not in record


def test_bad_hparams_stop_train_py_before_training(train):
    result = train("DGE", "--hparams", '{"dge_alpha": 1.5}', check=False)
    assert result.returncode != 0
    # train.py tees its stderr into its stdout.
    assert "'dge_alpha' = 1.5 is not allowed; allowed: a number in [0, 1]" in result.stdout + result.stderr
    assert "env0_in_acc" not in result.stdout


def run_unittest(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())


def test_domainbed_hparams_registry_suite_passes_with_the_plugin():
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "-v", "domainbed.test.test_hparams_registry"],
        capture_output=True, text=True, env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from domainbed import algorithms  # every one: the plugin's, and DomainBed's own with the plugin's keys

    assert set(ALGORITHMS) < set(algorithms.ALGORITHMS)
    for algorithm in algorithms.ALGORITHMS:
        assert f"_{algorithm} " in result.stderr, algorithm


DEBUG28_MODELS_SUITE = """
import sys, unittest
from domainbed.test import test_models
names = {names!r}
loader = unittest.TestLoader()
suite = unittest.TestSuite(
    test for test in loader.loadTestsFromTestCase(test_models.TestAlgorithms)
    if any(f"dataset_name='Debug28', algorithm_name='{{n}}'" in (test._testMethodDoc or "") for n in names)
)
assert suite.countTestCases() == len(names), suite.countTestCases()
sys.exit(not unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful())
"""


@pytest.mark.cuda
def test_domainbed_models_suite_passes_on_debug28():
    result = run_unittest(DEBUG28_MODELS_SUITE.format(names=ALGORITHMS))
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("algorithm", ["ERM", "DGE"])
def test_a_batch_larger_than_the_source_split_is_one_clear_error_not_a_hang(train, algorithm):
    # The offline fixture has 100 images per environment: 80 in the source's training split.
    result = train(algorithm, "--hparams", '{"batch_size": 1000}', name=f"big_{algorithm}", check=False)
    assert result.returncode != 0
    # train.py tees stderr into err.txt through its stdout.
    last_line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "batch_size 1000 exceeds the 80 training examples of RotatedMNIST environment 0 ('0', 100 examples)" \
        in last_line
