"""RandConv and Pro-RandConv (core.random_convolutions): the kernels' distribution,
identity cases, the consistency loss's closed form, and Pro-RandConv's block."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domainbed_dge.core.random_convolutions import (
    PRO_SMALLEST_STD,
    ProgressiveConvolution,
    ProgressiveRandConv,
    RandConv,
    RandomConvolution,
    RandomConvolutionBlock,
    consistency_loss,
    gaussian_smoothing,
    he_normal_kernel,
    uniform,
)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=4, channels=3, size=12, seed=1, dtype=torch.float32):
    return torch.randn(n, channels, size, size, generator=generator(seed), dtype=torch.float64).to(dtype)


# --- RandConv ----------------------------------------------------------------------


def test_a_1x1_kernel_is_a_per_pixel_linear_colour_map():
    x = images()
    convolution = RandConv(kernel_sizes=[1], identity_prob=0.0).sample(x.shape, generator())
    out = convolution(x)
    W = convolution.weight[:, :, 0, 0]
    for i, j in [(0, 0), (3, 7), (11, 11)]:
        torch.testing.assert_close(out[:, :, i, j], x[:, :, i, j] @ W.T)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("variant", ["img", "mix"])
def test_shapes_are_kept(k, variant):
    x = images(channels=3, size=9)
    convolution = RandConv(kernel_sizes=[k], variant=variant, identity_prob=0.0).sample(x.shape, generator())
    assert convolution.kernel_size == k and convolution.weight.shape == (3, 3, k, k)
    assert convolution(x).shape == x.shape


@pytest.mark.parametrize("channels,k", [(3, 1), (3, 3), (1, 5), (3, 7)])
def test_weights_are_he_normal(channels, k):
    g = generator(3)
    draws = torch.cat([he_normal_kernel(channels, k, g).flatten() for _ in range(20000 // (channels * k * k) + 1)])
    n, sigma = draws.numel(), 1 / math.sqrt(channels * k * k)
    assert abs(draws.mean()) < 3 * sigma / math.sqrt(n)
    assert abs(draws.std() - sigma) < 3 * sigma / math.sqrt(2 * n)


def test_kernel_sizes_are_drawn_uniformly_from_the_list():
    rule, g, n = RandConv(kernel_sizes=[1, 3, 5, 7]), generator(4), 4000
    counts = {k: 0 for k in (1, 3, 5, 7)}
    for _ in range(n):
        counts[rule.sample((2, 3, 8, 8), g).kernel_size] += 1
    binomial_sd = math.sqrt(n * 0.25 * 0.75)
    assert all(abs(count - n / 4) < 3 * binomial_sd for count in counts.values()), counts


def test_identity_probability_one_always_keeps_the_image_and_zero_never_does():
    x, g = images(), generator(5)
    always, never = RandConv(identity_prob=1.0), RandConv(identity_prob=0.0)
    for _ in range(50):
        assert always.sample(x.shape, g)(x) is x
        kept = never.sample(x.shape, g)
        assert not kept.identity and not torch.equal(kept(x), x)
    assert always.sample(x.shape, g).diagnostics()["randconv_identity_fraction"] == 1.0


def test_the_identity_share_follows_identity_prob():
    rule, g, n = RandConv(identity_prob=0.3), generator(6), 4000
    share = sum(rule.sample((2, 3, 8, 8), g).identity for _ in range(n)) / n
    assert abs(share - 0.3) < 3 * math.sqrt(0.3 * 0.7 / n)


def test_mixing_weight_zero_is_the_identity_and_one_the_convolution():
    x = images()
    weight = he_normal_kernel(3, 3, generator())
    plain = F.conv2d(x, weight, padding=1)
    torch.testing.assert_close(RandomConvolution(weight, mix_weight=0.0)(x), x)
    torch.testing.assert_close(RandomConvolution(weight, mix_weight=1.0)(x), plain)
    torch.testing.assert_close(RandomConvolution(weight, mix_weight=0.25)(x), 0.25 * plain + 0.75 * x)
    drawn = RandConv(variant="mix").sample(x.shape, generator(2))
    assert 0 <= drawn.mix_weight < 1 and not drawn.identity and "randconv_mix_weight" in drawn.diagnostics()


def test_one_kernel_per_batch():
    one = images(n=1)
    x = torch.cat([one, images(n=2, seed=9), one])
    convolution = RandConv(kernel_sizes=[5], identity_prob=0.0).sample(x.shape, generator())
    out = convolution(x)
    torch.testing.assert_close(out[0], out[3])
    torch.testing.assert_close(out[1:3], F.conv2d(x[1:3], convolution.weight, padding=2))


def test_draws_come_from_the_given_generator_or_torchs_seeded_one():
    rule, shape = RandConv(variant="mix"), (2, 3, 8, 8)
    first, second = rule.sample(shape, generator(7)), rule.sample(shape, generator(7))
    assert torch.equal(first.weight, second.weight) and first.mix_weight == second.mix_weight
    torch.manual_seed(11)
    a = rule.sample(shape)
    torch.manual_seed(11)
    b = rule.sample(shape)
    assert torch.equal(a.weight, b.weight) and a.mix_weight == b.mix_weight


@pytest.mark.parametrize("views", ["released", "independent"])
def test_consistency_views_convolve_the_first_view_or_the_clean_image(views):
    rule = RandConv(kernel_sizes=[3], identity_prob=0.0, consistency_views=views)
    x = images()
    first_view = rule.sample(x.shape, generator(1))(x)
    made = rule.consistency_inputs(x, first_view, generator(2))
    g = generator(2)
    source = first_view if views == "released" else x
    expected = [rule.sample(x.shape, g)(source) for _ in range(2)]
    assert len(made) == 2
    for view, want in zip(made, expected):
        torch.testing.assert_close(view, want)
    assert not torch.allclose(made[0], made[1])


def test_consistency_loss_is_zero_when_the_views_agree_and_positive_otherwise():
    z = torch.randn(5, 7, generator=generator())
    assert consistency_loss([z, z.clone(), z + 3.0]).abs() < 1e-6  # softmax ignores a shift
    assert consistency_loss([z, z.flip(0), z]) > 0


def test_consistency_loss_matches_the_hand_computed_js_value():
    log3 = math.log(3)
    logits = [torch.tensor([[0.0, 0.0]]), torch.tensor([[log3, 0.0]]), torch.tensor([[0.0, log3]])]
    # p = (1/2, 1/2), (3/4, 1/4), (1/4, 3/4); M = (1/2, 1/2); KL(p_1 || M) = 0.
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert consistency_loss(logits).item() == pytest.approx(2 * kl / 3, rel=1e-6)
    # batchmean: two copies of the batch give the same value.
    doubled = [torch.cat([z, z]) for z in logits]
    assert consistency_loss(doubled).item() == pytest.approx(2 * kl / 3, rel=1e-6)


def test_the_signed_range_convolves_minus_one_one_pixels_and_maps_the_result_back():
    x = torch.rand(4, 3, 12, 12, generator=generator(4))
    convolution = RandConv(kernel_sizes=[1], identity_prob=0.0, pixel_range="signed").sample(x.shape, generator())
    W = convolution.weight[:, :, 0, 0]
    out = convolution(x)
    for i, j in [(0, 0), (3, 7), (11, 11)]:
        torch.testing.assert_close(out[:, :, i, j], ((2 * x[:, :, i, j] - 1) @ W.T + 1) / 2)
    kept = RandConv(identity_prob=1.0, pixel_range="signed").sample(x.shape, generator())
    torch.testing.assert_close(kept(x), x)
    blended = RandConv(variant="mix", pixel_range="signed").sample(x.shape, generator(2))
    a = blended.mix_weight
    torch.testing.assert_close(blended(x), a * (blended.convolve(2 * x - 1) + 1) / 2 + (1 - a) * x)


def test_a_negative_kernel_turns_a_dark_ground_light_only_in_the_signed_range():
    # A light stroke (1) on a dark ground (0), convolved by the 1 x 1 kernel -1: in [-1, 1]
    # the ground becomes light and the stroke dark, as in the authors' runs; on [0, 1]
    # pixels the ground stays 0.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1:4, 2] = 1.0
    inverted = {signed: RandomConvolution(-torch.ones(1, 1, 1, 1), signed=signed)(x) for signed in (True, False)}
    torch.testing.assert_close(inverted[True], 1 - x)
    torch.testing.assert_close(inverted[False], -x)


def test_bad_randconv_settings_are_refused():
    for kwargs in ({"kernel_sizes": [2]}, {"kernel_sizes": []}, {"variant": "both"}, {"identity_prob": 1.5},
                   {"consistency_views": "twice"}, {"pixel_range": "unit"}):
        with pytest.raises(ValueError, match="not allowed"):
            RandConv(**kwargs)


# --- Pro-RandConv ------------------------------------------------------------------


def block_for(x, seed=0, **kwargs):
    return ProgressiveRandConv(**kwargs).sample_block(x.shape, generator(seed))


def test_the_smoothing_kernel_is_one_at_the_centre_and_gaussian_elsewhere():
    g = gaussian_smoothing(3, 0.7)
    assert g[1, 1] == 1.0
    torch.testing.assert_close(g[0, 1], torch.tensor(math.exp(-1 / (2 * 0.49))))
    torch.testing.assert_close(g[0, 0], torch.tensor(math.exp(-2 / (2 * 0.49))))
    torch.testing.assert_close(g, g.T)


def test_the_blocks_kernel_is_the_he_normal_draw_smoothed_and_its_centre_tap_unchanged():
    x = images()
    block = block_for(x, seed=3)
    g = generator(3)
    sigma = uniform(PRO_SMALLEST_STD, 1.0, g)
    he = he_normal_kernel(3, 3, g)
    assert block.smoothing_sigma == sigma and PRO_SMALLEST_STD <= sigma <= 1
    torch.testing.assert_close(block.weight[:, :, 1, 1], he[:, :, 1, 1], rtol=0, atol=0)
    torch.testing.assert_close(block.weight, he * gaussian_smoothing(3, sigma))


def test_deformable_convolution_with_zero_offsets_is_the_plain_convolution():
    x = images(dtype=torch.float64)
    block = block_for(x)
    still = RandomConvolutionBlock(block.weight, torch.zeros_like(block.offset), block.gamma, block.beta, 0.5, 0.0)
    torch.testing.assert_close(still.deform(x), F.conv2d(x, block.weight.double(), padding=1))
    assert not torch.allclose(block.deform(x), still.deform(x))


def test_the_pre_activation_has_mean_beta_and_std_abs_gamma_per_image_and_channel():
    x = images(n=3, size=16, dtype=torch.float64)
    block = block_for(x, seed=4)
    z = block.pre_activation(x)
    torch.testing.assert_close(z.mean(dim=(2, 3)), block.beta.double().expand(3, -1), rtol=0, atol=1e-4)
    torch.testing.assert_close(z.std(dim=(2, 3), unbiased=False), block.gamma.double().abs().expand(3, -1),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_the_output_lies_strictly_inside_minus_one_one(seed):
    x = 50 * images(n=2, size=10, dtype=torch.float64)
    out = ProgressiveRandConv(max_repeats=3).sample(x.shape, generator(seed))(x)
    assert out.shape == x.shape and out.abs().max() < 1


def test_the_signed_range_maps_the_tanh_output_into_zero_one():
    x = torch.rand(2, 3, 10, 10, generator=generator(3))
    rule = ProgressiveRandConv(max_repeats=3, pixel_range="signed")
    for seed in range(3):
        drawn = rule.sample(x.shape, generator(seed))
        out = drawn(x)
        torch.testing.assert_close(out, (drawn.transform(2 * x - 1) + 1) / 2)
        assert out.min() > 0 and out.max() < 1


def test_L_repeats_apply_one_block_L_times():
    x = images(size=10)
    block = block_for(x, seed=6)
    torch.testing.assert_close(ProgressiveConvolution(block, 2)(x), block(block(x)))
    torch.testing.assert_close(ProgressiveConvolution(block, 1)(x), block(x))
    drawn = ProgressiveRandConv(max_repeats=4).sample(x.shape, generator(8))
    expected = x
    for _ in range(drawn.repeats):
        expected = drawn.block(expected)
    torch.testing.assert_close(drawn(x), expected)


def test_repeats_are_uniform_on_one_to_L_max():
    rule, g, n = ProgressiveRandConv(max_repeats=4), generator(9), 2000
    counts = [0] * 5
    for _ in range(n):
        counts[rule.sample((1, 1, 4, 4), g).repeats] += 1
    assert counts[0] == 0
    assert all(abs(count - n / 4) < 3 * math.sqrt(n * 0.25 * 0.75) for count in counts[1:]), counts


def test_one_block_per_batch_with_one_offset_field():
    one = images(n=1, size=10)
    x = torch.cat([one, images(n=1, size=10, seed=5), one])
    out = ProgressiveRandConv().sample(x.shape, generator(2))(x)
    torch.testing.assert_close(out[0], out[2])
    assert not torch.allclose(out[0], out[1])


def test_offsets_are_normal_with_a_std_drawn_below_the_bound():
    x = images(n=2, size=32)
    for seed in range(10):
        block = block_for(x, seed=seed, offset_std_bound=0.2)
        assert PRO_SMALLEST_STD <= block.offset_std <= 0.2
        assert block.offset.shape == (1, 18, 32, 32)
        n = block.offset.numel()
        assert abs(block.offset.std() - block.offset_std) < 3 * block.offset_std / math.sqrt(2 * n)


def test_affine_parameters_have_the_given_std():
    g = generator(10)
    draws = torch.cat([ProgressiveRandConv(affine_std=0.5).sample_block((1, 3, 4, 4), g).gamma for _ in range(3000)])
    assert abs(draws.std() - 0.5) < 3 * 0.5 / math.sqrt(2 * draws.numel())


def test_bad_pro_randconv_settings_are_refused():
    for kwargs in ({"max_repeats": 0}, {"offset_std_bound": 0.0}, {"affine_std": -1.0}, {"kernel_size": 4},
                   {"pixel_range": "unit"}):
        with pytest.raises(ValueError, match="not allowed"):
            ProgressiveRandConv(**kwargs)
