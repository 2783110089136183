"""Shared fixtures: where DomainBed is, offline data, and DomainBed's commands as subprocesses.

DomainBed is looked for, in order, at ``$DOMAINBED_DIR``, ``~/DomainBed``, the test
fixture ``../shared/DomainBed`` beside the repository, and wherever this interpreter
already imports ``domainbed`` from. Without one, tests that need it skip with one line
saying how to enable them, except under CI (``CI`` set), where the run stops with
that line: CI never passes without the integration tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train_server import TrainServer

SKIP_REASON = (
    "DomainBed not found: set DOMAINBED_DIR to a checkout of facebookresearch/DomainBed "
    "(or put one at ~/DomainBed) to run the DomainBed integration tests"
)
#: The unmodified DomainBed export kept beside the repository as a test fixture.
SHARED_DOMAINBED = Path(__file__).resolve().parents[2] / "shared" / "DomainBed"


def find_domainbed() -> Path | None:
    candidates = []
    if os.environ.get("DOMAINBED_DIR"):
        candidates.append(Path(os.environ["DOMAINBED_DIR"]).expanduser())
    candidates += [Path.home() / "DomainBed", SHARED_DOMAINBED]
    spec = importlib.util.find_spec("domainbed")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]).parent)
    for root in candidates:
        if (root / "domainbed" / "algorithms.py").is_file():
            return root.resolve()
    return None


DOMAINBED_ROOT = find_domainbed()
if DOMAINBED_ROOT is not None and str(DOMAINBED_ROOT) not in sys.path:
    sys.path.append(str(DOMAINBED_ROOT))
os.environ.setdefault("OUTDATED_IGNORE", "1")


def pytest_report_header(config):
    return f"domainbed: {DOMAINBED_ROOT}" if DOMAINBED_ROOT is not None else SKIP_REASON


def pytest_sessionstart(session):
    if os.environ.get("CI") and DOMAINBED_ROOT is None:
        pytest.exit(f"CI: {SKIP_REASON}", returncode=3)


def pytest_collection_modifyitems(config, items):
    skip_domainbed = pytest.mark.skip(reason=SKIP_REASON)
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    cuda = None
    for item in items:
        if "domainbed" in item.keywords and DOMAINBED_ROOT is None:
            item.add_marker(skip_domainbed)
        if "cuda" in item.keywords:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(skip_cuda)


def subprocess_env() -> dict[str, str]:
    """The environment for DomainBed's commands: DomainBed importable, no update check,
    and data loaded in the training process (``DGE_DATA_WORKERS=0``: 8 loader
    processes per loader cost a 2-core machine more than they load)."""
    env = dict(os.environ, OUTDATED_IGNORE="1", PYTHONUNBUFFERED="1", DGE_DATA_WORKERS="0")
    if DOMAINBED_ROOT is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DOMAINBED_ROOT), env.get("PYTHONPATH")]))
    return env


#: This worker's train.py runner (``train_server``): DomainBed imported once, not per run.
TRAIN_SERVER = TrainServer(subprocess_env())


@pytest.fixture(scope="session", autouse=True)
def train_server():
    yield TRAIN_SERVER
    TRAIN_SERVER.close()


def run_module(module: str, *args: str, cwd: Path, python: str = sys.executable, check: bool = True):
    """Run ``python -m module args`` from ``cwd``; fail with its output if it fails.
    DomainBed's train.py with this interpreter runs in :data:`TRAIN_SERVER`."""
    if module == TrainServer.MODULE and python == sys.executable:
        result = TRAIN_SERVER.run(*args, cwd=cwd)
    else:
        result = subprocess.run([python, "-m", module, *args], cwd=cwd, env=subprocess_env(), capture_output=True,
                                text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"python -m {module} {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def assert_skipped_and_unchanged(algorithm, minibatches) -> None:
    """``algorithm.update(minibatches)`` reports a skipped non-finite step and leaves
    the algorithm's state and its optimizer's state exactly as they were."""
    import copy

    import torch

    state = copy.deepcopy(algorithm.state_dict())
    optimizer_state = copy.deepcopy(algorithm.optimizer.state_dict())
    assert algorithm.update(minibatches)["skipped_nonfinite"] == 1.0
    for key, value in algorithm.state_dict().items():
        assert torch.equal(value, state[key]), key
    after = algorithm.optimizer.state_dict()["state"]
    for index, entry in optimizer_state["state"].items():
        for field, value in entry.items():
            assert torch.equal(after[index][field], value)


def read_results(output_dir: Path) -> list[dict]:
    with open(output_dir / "results.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def offline_data(tmp_path_factory) -> Path:
    """A DomainBed data_dir with 600 MNIST images (100 per RotatedMNIST environment)."""
    data_dir = tmp_path_factory.mktemp("data")
    run_module("domainbed_dge.offline_data", "--data_dir", str(data_dir), "--datasets", "MNIST", "--num_images", "600",
               cwd=data_dir)
    return data_dir


#: Run a module as ``python -m`` would, with every socket connection refused and logged
#: (argv: the log file, the module, its arguments).
OFFLINE_PRELUDE = """
import runpy, socket, sys
log_path, module, *arguments = sys.argv[1:]
def refuse(*args, **kwargs):
    with open(log_path, "a") as log:
        log.write(f"connect {args[1:]!r}\\n")
    raise OSError("network use refused by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
sys.argv = [module, *arguments]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_offline(module: str, *args: str, network_log: Path, cwd: Path):
    """``python -m module args`` with the network refused; its attempts go to ``network_log``."""
    return subprocess.run([sys.executable, "-c", OFFLINE_PRELUDE, str(network_log), module, *args], cwd=cwd,
                          env=subprocess_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def offline_digits(tmp_path_factory) -> Path:
    """A DomainBed data_dir with OfflineDigits, written by ``offline_data`` with the network
    refused (``network.log`` beside it lists any attempt), and ``samples.png``."""
    root = tmp_path_factory.mktemp("digits")
    data_dir = root / "data"
    result = run_offline("domainbed_dge.offline_data", "--data_dir", str(data_dir), "--datasets", "OfflineDigits",
                         "--sample_grid", str(root / "samples.png"), network_log=root / "network.log", cwd=root)
    if result.returncode != 0:
        pytest.fail(f"offline_data exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return data_dir


@pytest.fixture
def train(offline_data, tmp_path):
    """Run DomainBed's train.py on the offline RotatedMNIST from a directory that is not
    DomainBed's root; return the output directory."""

    def run(algorithm: str, *extra: str, test_envs=("1", "2", "3", "4", "5"), name="out", python=sys.executable, check=True):
        output_dir = tmp_path / name
        result = run_module(
            "domainbed.scripts.train",
            "--algorithm", algorithm,
            "--dataset", "RotatedMNIST",
            "--data_dir", str(offline_data),
            "--test_envs", *test_envs,
            "--output_dir", str(output_dir),
            "--steps", "2",
            "--checkpoint_freq", "1",
            *extra,
            cwd=tmp_path,
            python=python,
            check=check,
        )
        return output_dir if check else result

    return run
