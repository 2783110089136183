"""Both install modes, in fresh virtual environments: DomainBed's own train.py finds
DGE with nothing but the install and the documented set-up command; the start-up
hook is cheap, silent, and cannot break interpreter start-up."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import DOMAINBED_ROOT, read_results, run_module, subprocess_env
from domainbed_dge._pth import write_pth

REPO = Path(__file__).resolve().parents[2]


def make_child_environment(root: Path) -> str:
    """A venv without pip that sees this environment's packages (torch, setuptools...)
    through a path line, so that only domainbed-dge is installed in it."""
    venv.create(root, with_pip=False)
    python = str(root / "bin" / "python")
    child_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(child_site, "parent_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def install(python: str, source: Path, editable: bool) -> None:
    args = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation", "-q"]
    args += ["-e", str(source)] if editable else [str(source)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def source_copy(tmp_path) -> Path:
    ignore = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "reports",
                                    ".venv", "data")
    return Path(shutil.copytree(REPO, tmp_path / "source", ignore=ignore))


@pytest.mark.domainbed
@pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])
def test_domainbed_train_finds_dge_after_install(tmp_path, source_copy, offline_data, train, editable):
    python = make_child_environment(tmp_path / "venv")
    install(python, source_copy, editable)
    setup = run_module("domainbed_dge.setup_domainbed", str(DOMAINBED_ROOT), cwd=tmp_path, python=python)
    assert "API: everything domainbed-dge uses is there" in setup.stdout
    output_dir = train("DGE", python=python, name="child_run")
    results = read_results(output_dir)
    assert len(results) == 2
    last = results[-1]
    for env in range(6):
        assert 0.0 <= last[f"env{env}_in_acc"] <= 1.0 and 0.0 <= last[f"env{env}_out_acc"] <= 1.0
    for key in ("loss", "grad_cosine", "pair_conflict_fraction", "direction_norm_ratio", "dge_weight_0", "dge_weight_2"):
        assert isinstance(last[key], float), key
    assert last["hparams"]["dge_num_views"] == 3 and last["args"]["test_envs"] == [1, 2, 3, 4, 5]


@pytest.mark.domainbed
def test_setup_domainbed_writes_a_start_up_hook_the_install_left_out(tmp_path, source_copy):
    """Seen with pip 24.0 and setuptools 81 on Python 3.12: ``pip install -e .`` without
    ``domainbed_dge.pth``. The set-up command finds that, says so, and mends it."""
    python = make_child_environment(tmp_path / "venv")
    install(python, source_copy, editable=True)
    child_site = probe(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    hook = Path(child_site, "domainbed_dge.pth")
    hook.unlink()
    registered = "from domainbed import algorithms; print('DGE' in algorithms.ALGORITHMS)"
    setup = run_module("domainbed_dge.setup_domainbed", str(DOMAINBED_ROOT), cwd=tmp_path, python=python)
    assert f"Wrote {hook}: the plugin's start-up hook, which the install left out" in setup.stdout
    assert "start-up hook: runs" in setup.stdout
    assert probe(python, registered).stdout.strip() == "True"
    hook.unlink()
    check = run_module("domainbed_dge.setup_domainbed", "--check", cwd=tmp_path, python=python, check=False)
    assert check.returncode == 1
    assert "ERROR: the start-up hook does not run, so DomainBed will not see DGE" in check.stdout
    assert probe(python, registered).stdout.strip() == "False"


def probe(python: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=subprocess_env())


def test_start_up_hook_is_installed_and_imports_nothing_heavy():
    result = probe(
        sys.executable,
        "import sys; print(sorted(m for m in ('torch', 'domainbed', 'numpy') if m in sys.modules),"
        " [type(f).__name__ for f in sys.meta_path][:1])",
    )
    assert result.stdout.strip() == "[] ['PatchingFinder']", result.stdout + result.stderr
    assert result.stderr == ""


def regular_install(root: Path) -> str:
    """A child environment laid out as ``pip install .`` leaves site-packages (the package
    and the start-up line) without building a wheel; ``pip install -e .`` would not do:
    setuptools' editable finder imports ``importlib.abc`` itself."""
    python = make_child_environment(root)
    child_site = probe(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    shutil.copytree(REPO / "domainbed_dge", Path(child_site, "domainbed_dge"), ignore=shutil.ignore_patterns("__pycache__"))
    write_pth(child_site)
    return python


def test_start_up_hook_of_a_regular_install_imports_only_itself(tmp_path):
    """A bare start pays for the hook's own two modules: not for ``importlib.abc`` (7 ms),
    torch, DomainBed (importable there) or the patches' imports."""
    python = regular_install(tmp_path / "venv")
    result = probe(
        python,
        "import sys; print(sorted(m for m in ('importlib.abc', 'torch', 'domainbed') if m in sys.modules),"
        " [type(f).__name__ for f in sys.meta_path][:1],"
        " sorted(m for m in sys.modules if m.startswith('domainbed_dge')))",
    )
    assert result.stdout.strip() == "[] ['PatchingFinder'] ['domainbed_dge', 'domainbed_dge._startup']", (
        result.stdout + result.stderr
    )
    assert result.stderr == ""


@pytest.mark.domainbed
def test_importing_domainbed_prints_nothing_and_registers_everything():
    result = probe(
        sys.executable,
        "from domainbed import algorithms, hparams_registry, datasets\n"
        "names = ['DGE', 'GradAvg', 'AgrSum', 'AgrRand', 'PCGrad', 'GSAM', 'SAGM', 'MixStyle', 'RandConv', "
        "'ProRandConv']\n"
        "assert all(n in algorithms.ALGORITHMS for n in names)\n"
        "assert all(algorithms.get_algorithm_class(n).__name__ == n for n in names)\n"
        "for d in datasets.DATASETS:\n"
        "    for n in names:\n"
        "        assert 'dge_optimizer' in hparams_registry.default_hparams(n, d)\n"
        "        assert hparams_registry.random_hparams(n, d, 7) == hparams_registry.random_hparams(n, d, 7)\n"
        "assert hparams_registry.default_hparams('ERM', 'PACS')['dge_num_views'] == 0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


@pytest.mark.domainbed
def test_other_algorithms_hparams_are_unchanged(tmp_path):
    """DomainBed's registry with and without the plugin gives ERM and MMD the same draws
    of DomainBed's own hyperparameters (the plugin's keys come on top, at their defaults)."""
    code = (
        "from domainbed import hparams_registry as h\n"
        "print(sorted((a, d, s, sorted((k, v) for k, v in h.random_hparams(a, d, s).items() if not k.startswith('dge_'))) "
        "for a in ('ERM', 'MMD') for d in ('PACS', 'RotatedMNIST') for s in (0, 5)))"
    )
    with_plugin = probe(sys.executable, code)
    without_plugin = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path += {sys.path!r}; exec({code!r})"],
        capture_output=True, text=True, env=subprocess_env(),
    )
    assert with_plugin.returncode == 0 and without_plugin.returncode == 0, with_plugin.stderr + without_plugin.stderr
    assert with_plugin.stdout == without_plugin.stdout


def test_start_up_never_breaks_when_the_package_is_gone(tmp_path):
    from domainbed_dge._pth import PTH_LINE

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "domainbed_dge.pth").write_text(PTH_LINE)
    code = f"import site, sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]; site.addsitedir({str(site_dir)!r}); print('started')"
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout == "started\n" and result.stderr == ""
