"""Degenerate inputs for every combiner, checkpoints written by train.py, and a
missing or different DomainBed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DOMAINBED_ROOT, read_results, subprocess_env
from domainbed_dge.core import peers
from domainbed_dge.core.equilibrium import equilibrate


@st.composite
def low_rank_matrices(draw):
    """K x P matrices of any rank, with rows scaled over 60 orders of magnitude."""
    K, P = draw(st.integers(1, 5)), draw(st.integers(1, 30))
    rank = draw(st.integers(0, min(K, P)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    basis = torch.randn(rank, P, generator=generator)
    mixing = torch.randn(K, rank, generator=generator)
    scales = torch.tensor([10.0 ** draw(st.sampled_from([-30, -5, 0, 5, 30])) for _ in range(K)])
    return (mixing @ basis) * scales.unsqueeze(1)


@settings(max_examples=150, deadline=None)
@given(G=low_rank_matrices(), weight_steps=st.integers(0, 3))
def test_every_combiner_stays_finite_on_degenerate_matrices(G, weight_steps):
    result = equilibrate(G, torch.ones(G.shape[0]), alpha=0.1, weight_lr=1.0, weight_steps=weight_steps)
    assert torch.isfinite(result.directions).all()
    assert ((result.weights >= 0) & (result.weights <= 1)).all()
    for direction in (peers.grad_avg(G), peers.agr_sum(G), peers.agr_rand(G), peers.pcgrad(G)):
        assert direction.shape == (G.shape[1],) and torch.isfinite(direction).all()


@pytest.mark.domainbed
def test_model_pkl_from_train_py_loads_and_predicts_what_was_recorded(train, offline_data):
    from domainbed import algorithms, datasets
    from domainbed.lib import misc
    from domainbed.lib.fast_data_loader import FastDataLoader

    output_dir = train("DGE", "--steps", "3", "--hparams", '{"batch_size": 16, "dge_weight_lr": 5.0}')
    record = read_results(output_dir)[-1]
    saved = torch.load(output_dir / "model.pkl", weights_only=True)
    algorithm = algorithms.get_algorithm_class("DGE")(
        saved["model_input_shape"], saved["model_num_classes"], saved["model_num_domains"], saved["model_hparams"]
    )
    algorithm.load_state_dict(saved["model_dict"])
    recorded_weights = [record[f"dge_weight_{k}"] for k in range(3)]
    torch.testing.assert_close(algorithm.equilibrium_weights.double(), torch.tensor(recorded_weights, dtype=torch.float64))
    # Rebuild train.py's split of a target environment and re-measure its accuracy.
    torch.manual_seed(0)
    dataset = datasets.RotatedMNIST(str(offline_data), [1, 2, 3, 4, 5], saved["model_hparams"])
    environment = dataset[3]
    out, in_split = misc.split_dataset(environment, int(len(environment) * 0.2), misc.seed_hash(0, 3))
    loader = FastDataLoader(dataset=in_split, batch_size=64, num_workers=0)
    assert misc.accuracy(algorithm, loader, None, "cpu") == record["env3_in_acc"]


def broken_checkout(tmp_path: Path) -> Path:
    """A copy of the real checkout whose registry no longer has ``_hparams``, as a
    DomainBed at another commit might."""
    root = Path(shutil.copytree(DOMAINBED_ROOT / "domainbed", tmp_path / "other" / "domainbed")).parent
    registry = root / "domainbed" / "hparams_registry.py"
    registry.write_text(registry.read_text().replace("_hparams(", "_registry_entries("))
    return root


def run_python(code: str, domainbed_root: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["PYTHONPATH"] = str(domainbed_root) if domainbed_root else ""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.domainbed
def test_another_domainbed_warns_once_and_keeps_working(tmp_path):
    root = broken_checkout(tmp_path)
    result = run_python("from domainbed import hparams_registry; print('imported')", root, tmp_path)
    assert result.stdout == "imported\n"
    assert "could not register itself into domainbed.hparams_registry" in result.stderr
    assert "setup_domainbed --check" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "domainbed_dge.setup_domainbed", str(root), "--check"],
        capture_output=True, text=True, env=subprocess_env(),
    )
    assert check.returncode == 1
    assert "ERROR: hparams_registry.py has no `def _hparams(algorithm, dataset, random_seed)`" in check.stdout


def test_missing_domainbed_gives_one_clear_message_and_breaks_nothing_else(tmp_path):
    code = (
        "import os, sys\n"
        "sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p, 'domainbed'))]\n"
        "print('started')\n"
        "try:\n    import domainbed_dge.plugin.algorithms\nexcept ImportError as error:\n    print(error)"
    )
    result = run_python(code, None, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    started, message = result.stdout.splitlines()
    assert started == "started"
    assert "need DomainBed" in message and "setup_domainbed /path/to/DomainBed" in message


def test_checkout_commit_is_that_of_the_checkout_not_of_a_repository_around_it(tmp_path):
    from domainbed_dge.setup_domainbed import checkout_commit

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (tmp_path / "file").write_text("x")
    git("add", "file")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    inner = tmp_path / "copy_of_domainbed"
    inner.mkdir()
    assert checkout_commit(str(tmp_path)) == git("rev-parse", "HEAD").strip()
    assert checkout_commit(str(inner)) is None
