"""One clear error instead of a download when ``--data_dir`` holds no MNIST or no OfflineDigits.

DomainBed's MNIST datasets (RotatedMNIST, ColoredMNIST) build torchvision's MNIST
with ``download=True``: given a folder without the MNIST files, torchvision creates
``<data_dir>/MNIST/raw`` and tries the network, which offline fails after seconds and
leaves the empty folder behind. The start-up hook makes them check the folder first
(:func:`guard_mnist`) and refuse one without the files, naming it and the command
that writes them; nothing is created. The plugin's OfflineDigits reads the files
named by :func:`digits_files` and refuses a folder lacking any of them the same way
(:func:`check_digits`). Standard library only.
"""

from __future__ import annotations

import functools
import os

#: MNIST's four IDX files in ``<data_dir>/MNIST/raw``, as torchvision reads them
#: (each may also be there as its downloaded ``.gz``, which torchvision extracts).
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
#: What an older torchvision left in ``<data_dir>/MNIST/processed`` instead; still read.
LEGACY_FILES = ("training.pt", "test.pt")


class MNISTNotFound(FileNotFoundError):
    """``--data_dir`` holds no MNIST, so DomainBed would try to download it."""


def missing_mnist(data_dir: str) -> str | None:
    """Why torchvision would download MNIST into ``data_dir``, or None when it would not."""
    mnist = os.path.join(data_dir, "MNIST")
    if all(os.path.isfile(os.path.join(mnist, "processed", name)) for name in LEGACY_FILES):
        return None
    raw = os.path.join(mnist, "raw")
    if not os.path.isdir(raw):
        return f"{os.path.abspath(data_dir)} has no MNIST/raw folder"
    missing = [name for name in MNIST_FILES if not _present(os.path.join(raw, name))]
    return f"{os.path.abspath(raw)} lacks {', '.join(missing)}" if missing else None


def _present(path: str) -> bool:
    return os.path.isfile(path) or os.path.isfile(path + ".gz")


def check_mnist(dataset: str, data_dir: str) -> None:
    """Raise :class:`MNISTNotFound` when ``data_dir`` holds no MNIST for ``dataset``."""
    problem = missing_mnist(data_dir)
    if problem is not None:
        raise MNISTNotFound(
            f"{dataset} reads MNIST from <data_dir>/MNIST/raw, but {problem}: DomainBed would try to download it. "
            f"Write the offline subset there with `python -m domainbed_dge.offline_data --data_dir {data_dir}`, "
            "or pass the --data_dir that holds MNIST/raw."
        )


def guard_mnist(module) -> None:
    """``domainbed.datasets``: make ``MultipleEnvironmentMNIST`` check its root before
    torchvision may download into it."""
    base = module.MultipleEnvironmentMNIST
    if getattr(base.__init__, "__guarded__", False):
        return
    init = base.__init__

    @functools.wraps(init)
    def __init__(self, root, *args, **kwargs):
        if root is not None:  # DomainBed's own error says that no folder was given
            check_mnist(type(self).__name__, root)
        init(self, root, *args, **kwargs)

    __init__.__guarded__ = True
    base.__init__ = __init__


#: OfflineDigits' environments, in DomainBed's order (``--test_envs 1 2 3``: MNIST the source).
#: OptDigits stands in for USPS (UCI optdigits: handwritten digits, upsampled as USPS is).
DIGITS_ENVIRONMENTS = ("MNIST", "MNIST-M", "SYN", "OptDigits")
#: The folder under ``--data_dir`` that holds them.
DIGITS_FOLDER = "OfflineDigits"


class DigitsNotFound(FileNotFoundError):
    """``--data_dir`` holds no complete OfflineDigits."""


def digits_files(data_dir: str, environment: str) -> tuple[str, str]:
    """The images (N x 28 x 28 x 3, uint8) and labels (N, uint8) ``.npy`` files of one
    OfflineDigits environment."""
    folder = os.path.join(data_dir, DIGITS_FOLDER, environment)
    return os.path.join(folder, "images.npy"), os.path.join(folder, "labels.npy")


def missing_digits(data_dir: str) -> str | None:
    """What OfflineDigits lacks in ``data_dir``, or None when every file is there."""
    if not os.path.isdir(os.path.join(data_dir, DIGITS_FOLDER)):
        return f"{os.path.abspath(data_dir)} has no {DIGITS_FOLDER} folder"
    missing = [
        os.path.relpath(path, data_dir)
        for environment in DIGITS_ENVIRONMENTS
        for path in digits_files(data_dir, environment)
        if not os.path.isfile(path)
    ]
    return f"{os.path.abspath(data_dir)} lacks {', '.join(missing)}" if missing else None


def check_digits(data_dir: str) -> None:
    """Raise :class:`DigitsNotFound` when ``data_dir`` lacks any OfflineDigits file."""
    problem = missing_digits(data_dir)
    if problem is not None:
        raise DigitsNotFound(
            f"OfflineDigits reads <data_dir>/{DIGITS_FOLDER}, but {problem}: write it there with "
            f"`python -m domainbed_dge.offline_data --data_dir {data_dir}`, or pass the --data_dir that holds "
            f"{DIGITS_FOLDER}."
        )
