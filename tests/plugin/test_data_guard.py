"""The MNIST guard accepts every folder torchvision reads without a download, and names
what is missing in any other."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainbed_dge.plugin.data_guard import MNIST_FILES, MNISTNotFound, check_mnist, missing_mnist


def write(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_a_folder_without_mnist_raw_is_named(tmp_path):
    assert missing_mnist(str(tmp_path)) == f"{tmp_path} has no MNIST/raw folder"
    with pytest.raises(MNISTNotFound, match=r"python -m domainbed_dge\.offline_data --data_dir .*"):
        check_mnist("ColoredMNIST", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_missing_files_of_mnist_raw_are_named(tmp_path):
    write(tmp_path / "MNIST" / "raw", *MNIST_FILES[:2], MNIST_FILES[2] + ".gz")
    assert missing_mnist(str(tmp_path)) == f"{tmp_path / 'MNIST' / 'raw'} lacks {MNIST_FILES[3]}"


#: What torchvision reads without downloading: folder under <data_dir>/MNIST, its files.
READABLE = {
    "IDX files": ("raw", MNIST_FILES),
    "downloaded archives": ("raw", tuple(name + ".gz" for name in MNIST_FILES)),
    "an older torchvision's processed files": ("processed", ("training.pt", "test.pt")),
}


@pytest.mark.parametrize("layout", READABLE)
def test_what_torchvision_reads_without_a_download_passes(tmp_path, layout):
    folder, names = READABLE[layout]
    write(tmp_path / "MNIST" / folder, *names)
    assert missing_mnist(str(tmp_path)) is None
    check_mnist("RotatedMNIST", str(tmp_path))
