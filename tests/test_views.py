"""Augmented views: the un-normalise / augment / re-normalise round trip per input kind."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from domainbed_dge.views import IMAGENET_MEAN, IMAGENET_STD, ViewMaker, make_transform


def imagenet_batch(seed=0):
    unit = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return unit, (unit - mean) / std


def test_identity_round_trip_on_imagenet_normalised_rgb():
    _, x = imagenet_batch()
    torch.testing.assert_close(ViewMaker(v2.Identity(), "imagenet", 3)(x), x, atol=1e-6, rtol=1e-5)


def test_transform_sees_unit_range_images():
    unit, x = imagenet_batch()
    seen = []

    def spy(image):
        seen.append(image)
        return image

    ViewMaker(v2.Lambda(spy), "imagenet", 3)(x)
    torch.testing.assert_close(seen[0], unit, atol=1e-6, rtol=1e-5)


def test_brightness_scales_unnormalised_pixels():
    unit, x = imagenet_batch()
    view = ViewMaker(v2.ColorJitter(brightness=(0.5, 0.5)), "imagenet", 3)(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(view * std + mean, unit * 0.5, atol=1e-5, rtol=1e-5)


def test_grey_mnist_keeps_shape_and_range():
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(0)
    view = ViewMaker(make_transform("randaugment", 3, 9), "none", 1)(x)
    assert view.shape == x.shape and view.min() >= 0 and view.max() <= 1


def test_two_channel_images_act_as_red_green_of_rgb():
    x = torch.zeros(2, 2, 8, 8)
    x[:, 0] = 1.0  # pure red
    grey = ViewMaker(v2.Grayscale(num_output_channels=3), "none", 2)(x)
    assert grey.shape == x.shape
    # Greyscale of pure red is 0.2989 in both channels kept: colour ops act on RGB.
    torch.testing.assert_close(grey, torch.full_like(x, 0.2989), atol=1e-3, rtol=0)


def test_each_view_draws_its_own_augmentation_for_the_whole_batch():
    x = torch.rand(6, 1, 28, 28)
    maker = ViewMaker(make_transform("rotation", 2, 9), "none", 1)
    torch.manual_seed(0)
    first, second = maker.views(x, 2)
    assert not torch.equal(first, second)
    # One angle for the whole batch: rotating the batch equals rotating each image by it.
    torch.manual_seed(0)
    angle = float(torch.empty(1).uniform_(-30.0, 30.0))
    expected = v2.functional.rotate(x, angle)
    torch.testing.assert_close(first, expected)


def test_seeded_views_are_reproducible():
    x = torch.rand(3, 1, 28, 28)
    maker = ViewMaker(make_transform("randaugment", 2, 9), "none", 1)
    torch.manual_seed(5)
    a = maker.views(x, 3)
    torch.manual_seed(5)
    b = maker.views(x, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("augment", ["randaugment", "rotation", "brightness", "rotation_brightness"])
def test_every_augmentation_runs_on_each_input_kind(augment):
    transform = make_transform(augment, 2, 9)
    for normalization, channels in (("imagenet", 3), ("none", 1), ("none", 2)):
        x = torch.rand(2, channels, 28, 28)
        assert ViewMaker(transform, normalization, channels)(x).shape == x.shape


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="'cutout'.*randaugment"):
        make_transform("cutout", 2, 9)
    with pytest.raises(ValueError, match="3 channels"):
        ViewMaker(v2.Identity(), "imagenet", 2)
