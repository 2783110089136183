"""Augmented views: the un-normalise / augment / re-normalise round trip per input kind."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from domainbed_dge.plugin.views import IMAGENET_MEAN, IMAGENET_STD, ViewMaker, fixed_view_seeds, make_transform


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


def rotation_maker(sampling, seeds=None):
    return ViewMaker(make_transform("rotation", 2, 9), "none", 1, sampling, seeds)


def test_none_makes_every_view_the_batch_itself():
    x = torch.rand(3, 1, 8, 8)
    assert make_transform("none", 2, 9) is None
    assert all(view is x for view in ViewMaker(None, "none", 1).views(x, 2))


def test_fixed_views_replay_their_draw_without_touching_the_global_stream():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maker = rotation_maker("fixed", fixed_view_seeds(7, 3))
    torch.manual_seed(123)
    first = maker.views(x, 3)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = maker.views(x, 3)
    assert torch.rand(1) == after_first  # the run's random stream is as if no view was made
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])
    assert fixed_view_seeds(7, 3) == fixed_view_seeds(7, 3) != fixed_view_seeds(8, 3)


def test_batch_views_draw_anew_every_time():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maker = rotation_maker("batch")
    torch.manual_seed(0)
    assert not torch.allclose(maker(x), maker(x))


def test_image_sampling_draws_per_image_and_batch_sampling_per_batch():
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    x = image.expand(4, -1, -1, -1).contiguous()  # four copies of one image
    torch.manual_seed(0)
    per_batch = rotation_maker("batch")(x)
    per_image = rotation_maker("image")(x)
    assert all(torch.equal(per_batch[0], view) for view in per_batch[1:])
    assert not torch.allclose(per_image[0], per_image[1])


def test_bad_sampling_and_missing_seeds_are_refused():
    with pytest.raises(ValueError, match="'sometimes'.*batch, image, fixed"):
        rotation_maker("sometimes")
    with pytest.raises(ValueError, match="seeds"):
        rotation_maker("fixed")
    with pytest.raises(ValueError, match="3 fixed views.*2 seeds"):
        rotation_maker("fixed", [1, 2]).views(torch.rand(2, 1, 8, 8), 3)


def test_fixed_view_seeds_are_drawn_on_the_cpu_under_any_default_device():
    with torch.device("meta"):
        seeds = fixed_view_seeds(3, 2)
    assert seeds == fixed_view_seeds(3, 2) and all(isinstance(seed, int) for seed in seeds)
