"""OfflineDigits: written offline and deterministically, the size and shape DomainBed
expects, MNIST-M and SYN as their constructions say, only legible fonts, and one clear
error for a missing or partial folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from conftest import read_results, run_module, run_offline
from domainbed_dge.data import digits, mnist_m, opt_digits, syn_digits
from domainbed_dge.plugin.data_guard import DIGITS_ENVIRONMENTS, DigitsNotFound, check_digits, digits_files

SIZES = {"MNIST": 3000, "MNIST-M": 2000, "SYN": 2000, "OptDigits": 1797}


def test_the_command_downloads_nothing(offline_digits, tmp_path):
    assert not (offline_digits.parent / "network.log").exists()
    # The guard is live: ftplib's command connects at once, and is refused and logged.
    log = tmp_path / "network.log"
    assert run_offline("ftplib", "127.0.0.1", network_log=log, cwd=tmp_path).returncode != 0
    assert log.read_text().startswith("connect")


def test_the_same_seed_gives_bit_identical_files(offline_digits, tmp_path):
    digits.write_digits(str(tmp_path), seed=0)
    for environment in DIGITS_ENVIRONMENTS:
        for ours, theirs in zip(digits_files(str(tmp_path), environment), digits_files(str(offline_digits), environment)):
            with open(ours, "rb") as a, open(theirs, "rb") as b:
                assert a.read() == b.read(), ours


def test_another_seed_splits_mnist_otherwise():
    first = digits.mnist_split(5000, digits.generators(0)[0])
    again = digits.mnist_split(5000, digits.generators(0)[0])
    other = digits.mnist_split(5000, digits.generators(1)[0])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_mnist_m_never_reuses_a_source_digit():
    source, mnist_m_part = digits.mnist_split(5000, digits.generators(0)[0])
    assert len(source) == SIZES["MNIST"] and len(mnist_m_part) == SIZES["MNIST-M"]
    assert not set(source.tolist()) & set(mnist_m_part.tolist())


@pytest.mark.domainbed
def test_domainbed_reads_every_environment_at_its_size_and_shape(offline_digits):
    from domainbed import datasets, hparams_registry

    dataset = datasets.get_dataset_class("OfflineDigits")(str(offline_digits), [1, 2, 3],
                                                           hparams_registry.default_hparams("ERM", "OfflineDigits"))
    assert "OfflineDigits" in datasets.DATASETS
    assert datasets.OfflineDigits.ENVIRONMENTS == list(SIZES)
    assert dataset.input_shape == (3, 28, 28) and dataset.num_classes == 10
    for name, environment in zip(SIZES, dataset):
        images, labels = environment.tensors
        assert images.shape == (SIZES[name], 3, 28, 28), name
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert sorted(labels.unique().tolist()) == list(range(10)), name
        counts = np.bincount(labels.numpy(), minlength=10)
        assert counts.min() >= 0.07 * len(labels), (name, counts)  # no class nearly missing


def test_mnist_m_is_the_absolute_difference_of_crop_and_digit():
    digit = np.zeros((1, 28, 28), dtype=np.uint8)
    digit[0, 10:18, 12:16] = 255
    digit[0, 5, 5] = 100
    photograph = np.zeros((40, 50, 3), dtype=np.uint8)
    photograph[..., 0], photograph[..., 1], photograph[..., 2] = 30, 200, 120
    out = mnist_m.blend(digit, [photograph], np.random.default_rng(0))[0]
    assert out.shape == (28, 28, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 200, 120])  # background: the photograph
    np.testing.assert_array_equal(out[12, 13], [225, 55, 135])  # stroke: 255 - photograph
    np.testing.assert_array_equal(out[5, 5], [70, 100, 20])  # |photograph - 100|


def blurred_shape(path: str, digit: int) -> np.ndarray:
    """A glyph squared, 32 x 32, blurred and standardised: what nearest-neighbour reading compares."""
    mask = syn_digits.glyph(path, digit)
    side = max(mask.size)
    square = Image.new("L", (side, side), 0)
    square.paste(mask, ((side - mask.width) // 2, (side - mask.height) // 2))
    vector = np.asarray(square.resize((32, 32), Image.BOX).filter(ImageFilter.GaussianBlur(2)), dtype=float).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def digits_read_by_the_other_fonts(path: str, kept: list[str]) -> int:
    """How many of the font's ten glyphs for '0'-'9' have, among the glyphs of the other
    kept fonts, a nearest neighbour of the same digit."""
    others = [other for other in kept if other != path]
    bank = np.stack([blurred_shape(other, digit) for other in others for digit in range(10)])
    labels = np.tile(np.arange(10), len(others))
    ours = np.stack([blurred_shape(path, digit) for digit in range(10)])
    return int((labels[np.argmax(ours @ bank.T, axis=1)] == np.arange(10)).sum())


def test_syn_keeps_exactly_the_fonts_whose_digits_are_digits():
    kept = syn_digits.legible_fonts()
    names = {os.path.basename(path) for path in kept}
    assert len(kept) >= 10
    assert not names & {"cmex10.ttf", "cmsy10.ttf", "cmmi10.ttf", "LastResortHE-Regular.ttf", "STIXSizOneSymReg.ttf"}
    for path in kept:  # each font's digits are read as those digits by the other fonts'
        assert digits_read_by_the_other_fonts(path, kept) == 10, os.path.basename(path)
    for path in syn_digits.matplotlib_fonts():  # and a symbol font's are not
        if os.path.basename(path) in ("cmex10.ttf", "cmsy10.ttf"):
            assert digits_read_by_the_other_fonts(path, kept) <= 2, os.path.basename(path)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_syn_colours_keep_the_minimum_contrast(seed):
    stroke, background = syn_digits.colours(np.random.default_rng(seed))
    assert abs(syn_digits.luma(stroke) - syn_digits.luma(background)) >= syn_digits.MIN_CONTRAST


def test_syn_images_show_both_colours(offline_digits):
    images = np.load(digits_files(str(offline_digits), "SYN")[0]).astype(float)
    lumas = images[:200] @ syn_digits.LUMA / 255.0
    spread = lumas.reshape(200, -1).max(axis=1) - lumas.reshape(200, -1).min(axis=1)
    assert spread.min() > 0.15  # blur and downsampling keep most of the 0.3 luma contrast


def test_opt_digits_are_upsampled_whole():
    full = np.full((8, 8), 16.0)
    np.testing.assert_array_equal(opt_digits.upsample(full), np.full((28, 28), 255, dtype=np.uint8))
    left = np.zeros((8, 8))
    left[:, :4] = 16.0
    image = opt_digits.upsample(left)
    assert image.shape == (28, 28) and image[:, :12].min() == 255 and image[:, 16:].max() == 0


def test_the_sample_grid_is_written(offline_digits):
    with Image.open(offline_digits.parent / "samples.png") as picture:
        width, height = picture.size
    assert width > 2 * height > 0  # 4 rows of 20 samples


def test_a_partial_folder_is_named_with_the_command(offline_digits, tmp_path):
    with pytest.raises(DigitsNotFound, match=r"has no OfflineDigits folder: .*python -m domainbed_dge\.offline_data"):
        check_digits(str(tmp_path))
    for environment in DIGITS_ENVIRONMENTS:
        for path in digits_files(str(tmp_path), environment):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
    os.remove(digits_files(str(tmp_path), "SYN")[1])
    with pytest.raises(DigitsNotFound) as error:
        check_digits(str(tmp_path))
    assert str(error.value).startswith(f"OfflineDigits reads <data_dir>/OfflineDigits, but {tmp_path} lacks "
                                       "OfflineDigits/SYN/labels.npy: write it there with `python -m")
    check_digits(str(offline_digits))


@pytest.mark.domainbed
def test_train_py_trains_on_offline_digits_with_small_image_hparams(offline_digits, tmp_path):
    # Every 20th image of each environment, so that train.py's evaluation stays short.
    small = tmp_path / "data"
    for environment in DIGITS_ENVIRONMENTS:
        for source, target in zip(digits_files(str(offline_digits), environment), digits_files(str(small), environment)):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            np.save(target, np.load(source)[::20])
    output = tmp_path / "out"
    run_module("domainbed.scripts.train", "--algorithm", "DGE", "--dataset", "OfflineDigits", "--data_dir",
               str(small), "--test_envs", "1", "2", "3", "--steps", "2", "--checkpoint_freq", "1",
               "--output_dir", str(output), "--hparams", '{"batch_size": 16}', cwd=tmp_path)
    records = read_results(output)
    assert [record["step"] for record in records] == [0, 1]
    assert {f"env{i}_in_acc" for i in range(4)} <= set(records[-1])
    hparams = records[-1]["hparams"]
    assert hparams["lr"] == 1e-3 and hparams["weight_decay"] == 0.0  # DomainBed's small-image defaults
    assert hparams["dge_input_normalization"] == "none" and hparams["batch_size"] == 16


@pytest.mark.domainbed
def test_train_py_refuses_a_missing_folder_and_creates_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_module("domainbed.scripts.train", "--algorithm", "ERM", "--dataset", "OfflineDigits", "--data_dir",
                        str(empty), "--test_envs", "1", "2", "3", "--steps", "1", "--output_dir", str(tmp_path / "o"),
                        cwd=tmp_path, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr  # train.py's Tee sends its stderr through stdout
    assert f"DigitsNotFound: OfflineDigits reads <data_dir>/OfflineDigits, but {empty} has no OfflineDigits folder" in output
    assert f"python -m domainbed_dge.offline_data --data_dir {empty}`" in output
    assert list(empty.iterdir()) == []


@pytest.mark.domainbed
def test_hparams_are_those_of_domainbeds_small_image_datasets():
    from domainbed import hparams_registry

    for algorithm in ("ERM", "Mixup", "DANN"):
        for seed in (0, 3):
            assert (hparams_registry.random_hparams(algorithm, "OfflineDigits", seed)
                    == hparams_registry.random_hparams(algorithm, "RotatedMNIST", seed))
    assert hparams_registry.default_hparams("DGE", "OfflineDigits")["dge_input_normalization"] == "none"
    assert hparams_registry.default_hparams("ProRandConv", "OfflineDigits")["prorandconv_offset_std"] == 0.2


@pytest.mark.domainbed
def test_the_sweeps_data_check_reads_its_sizes(offline_digits, tmp_path):
    from domainbed_dge.experiments.batch_guard import SizesUnavailable, environment_sizes

    assert environment_sizes("OfflineDigits", str(offline_digits)) == list(SIZES.values())
    with pytest.raises(SizesUnavailable, match="python -m domainbed_dge.offline_data"):
        environment_sizes("OfflineDigits", str(tmp_path))
