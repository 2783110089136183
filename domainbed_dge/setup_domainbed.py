"""Make a DomainBed checkout importable in this Python environment, and check it.

    python -m domainbed_dge.setup_domainbed /path/to/DomainBed
    python -m domainbed_dge.setup_domainbed --check

The first form writes ``domainbed_checkout.pth`` (one line: the checkout's path) into
site-packages, writes the plugin's start-up hook (``domainbed_dge.pth``) there too when
a fresh interpreter does not run it (some installers leave it out of an editable
install), then checks. ``--check`` only checks whatever ``domainbed`` this
interpreter imports (PYTHONPATH, the current directory, or that .pth file). Both check that
the start-up hook runs, without which DomainBed never sees the plugin. A checkout
at another commit than the pinned one is reported, not refused.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import sysconfig

from domainbed_dge import _pth
from domainbed_dge.plugin.host import NOT_IMPORTABLE, domainbed_importable

PINNED_COMMIT = "b93c22a1cfc3b2428398272c1a116c8de1f4139e"
PTH_NAME = "domainbed_checkout.pth"

#: (file, text it must contain): the parts of DomainBed's API this plugin relies on.
REQUIRED_API = (
    ("algorithms.py", "def get_algorithm_class(algorithm_name)"),
    ("algorithms.py", "ALGORITHMS = ["),
    ("algorithms.py", "class Algorithm(torch.nn.Module)"),
    ("hparams_registry.py", "def _hparams(algorithm, dataset, random_seed)"),
    ("hparams_registry.py", "def default_hparams(algorithm, dataset)"),
    ("command_launchers.py", "REGISTRY = {"),
    ("networks.py", "def Featurizer(input_shape, hparams)"),
    ("networks.py", "def Classifier(in_features, out_features, is_nonlinear=False)"),
    ("scripts/train.py", "len(dataset) - len(args.test_envs), hparams)"),
    ("scripts/sweep.py", "class Job:"),
)


def checkout_problems(package_dir: str) -> list[str]:
    """What in the ``domainbed`` package at ``package_dir`` differs from the API used."""
    problems = []
    for relative, needle in REQUIRED_API:
        path = os.path.join(package_dir, relative)
        try:
            with open(path, encoding="utf-8") as handle:
                if needle not in handle.read():
                    problems.append(f"{relative} has no `{needle}`")
        except OSError:
            problems.append(f"{relative} is missing")
    return problems


def checkout_commit(root: str) -> str | None:
    """The checkout's git commit, or None when it is not the root of a git work tree
    (a copy inside another repository is not that repository's commit)."""
    try:
        result = subprocess.run(
            ["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    toplevel, commit = result.stdout.split()
    return commit if os.path.realpath(toplevel) == os.path.realpath(root) else None


def check(root: str) -> int:
    """Print what was found; return 0 if the API is usable, 1 if not."""
    package_dir = os.path.join(root, "domainbed")
    problems = checkout_problems(package_dir)
    print(f"DomainBed checkout: {root}")
    commit = checkout_commit(root)
    if commit is None:
        print("  commit: unknown (not a git work tree); the API checks below decide")
    elif commit != PINNED_COMMIT:
        print(f"  WARNING: commit {commit} is not the tested {PINNED_COMMIT}; it may still work")
    else:
        print(f"  commit: {commit} (the tested one)")
    for problem in problems:
        print(f"  ERROR: {problem}")
    if problems:
        print("  This checkout lacks parts of DomainBed's API that domainbed-dge uses.")
        return 1
    print("  API: everything domainbed-dge uses is there")
    if not hook_runs():
        print(f"  ERROR: the start-up hook does not run, so DomainBed will not see DGE; "
              f"`python -m domainbed_dge.setup_domainbed {root}` writes {_pth.PTH_NAME} into site-packages")
        return 1
    print("  start-up hook: runs (DomainBed's train, sweep and collect_results see DGE)")
    return 0


def hook_runs() -> bool:
    """Whether a fresh interpreter like this one installs the plugin's start-up hook."""
    return subprocess.run([sys.executable, "-c", _pth.HOOK_PROBE], capture_output=True).returncode == 0


def install(root: str) -> str:
    """Write the .pth line that puts ``root`` on sys.path; return the file written."""
    path = os.path.join(site_packages(), PTH_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(root + "\n")
    return path


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.setup_domainbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", nargs="?",
                        help="path to the DomainBed checkout, the folder holding domainbed/ (default: none, check only)")
    parser.add_argument("--check", action="store_true",
                        help="only check the domainbed this interpreter imports (default: off)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkout:
        root = os.path.abspath(os.path.expanduser(args.checkout))
        if not os.path.isfile(os.path.join(root, "domainbed", "algorithms.py")):
            parser.error(f"{root} is not a DomainBed checkout: it has no domainbed/algorithms.py")
        if not args.check:
            print(f"Wrote {install(root)}: `import domainbed` now finds {root}")
            if not hook_runs():
                print(f"Wrote {_pth.write_pth(site_packages())}: the plugin's start-up hook, which the install left out")
        return check(root)
    if not domainbed_importable():
        print(NOT_IMPORTABLE)
        return 1
    spec = importlib.util.find_spec("domainbed")
    return check(os.path.dirname(list(spec.submodule_search_locations)[0]))


if __name__ == "__main__":
    sys.exit(main())
