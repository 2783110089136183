"""MixStyle's operation (Dassl c61a1b5 dassl/modeling/ops/mixstyle.py:53-124): identity
cases, the mixed statistics, the gradient through detached statistics, the draws."""

from __future__ import annotations

import pytest
import torch

from domainbed_dge.core.mixstyle import (
    MixStyle,
    beta_draws,
    mix_styles,
    mixing_permutation,
    style_statistics,
)

B, C, H, W = 6, 3, 5, 4


def features(seed=0):
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(B, C, 1, 1, generator=generator, dtype=torch.float64) * 3 + 0.5
    shift = torch.randn(B, C, 1, 1, generator=generator, dtype=torch.float64) * 2
    return torch.randn(B, C, H, W, generator=generator, dtype=torch.float64) * scale + shift


def lams(seed=1):
    return torch.rand(B, 1, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


PERM = torch.tensor([3, 0, 5, 1, 2, 4])


def test_statistics_are_the_spatial_mean_and_the_unbiased_std_with_eps_detached():
    x = features().requires_grad_()
    mu, sig = style_statistics(x, eps=0.25)
    flat = x.detach().reshape(B, C, H * W)
    expected_var = ((flat - flat.mean(-1, keepdim=True)) ** 2).sum(-1) / (H * W - 1)
    torch.testing.assert_close(mu.reshape(B, C), flat.mean(-1))
    torch.testing.assert_close(sig.reshape(B, C), (expected_var + 0.25).sqrt())
    assert not mu.requires_grad and not sig.requires_grad


def test_identity_permutation_or_lam_one_returns_x():
    x = features()
    torch.testing.assert_close(mix_styles(x, lams(), torch.arange(B)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(mix_styles(x, torch.ones(B, 1, 1, 1, dtype=x.dtype), PERM), x, atol=1e-5, rtol=0)
    assert not torch.allclose(mix_styles(x, lams(), PERM), x, atol=1e-3)


def test_identical_samples_are_unchanged_by_any_lam_and_perm():
    x = features()[:1].expand(B, C, H, W).clone()
    torch.testing.assert_close(mix_styles(x, lams(), PERM), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_output_statistics_are_the_mixed_ones(eps):
    x, lam = features(), lams()
    mu, sig = style_statistics(x, eps)
    mu_mix = lam * mu + (1 - lam) * mu[PERM]
    sig_mix = lam * sig + (1 - lam) * sig[PERM]
    out = mix_styles(x, lam, PERM, eps)
    out_mu, out_sig = style_statistics(out, eps=0.0)
    torch.testing.assert_close(out_mu, mu_mix)
    # The normalised x has unbiased std sqrt(var / (var + eps)), so out's std is sig_mix times that.
    var = x.var(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out_sig, sig_mix * (var / (var + eps)).sqrt())


def test_gradient_is_sig_mix_over_sig_elementwise():
    x, lam = features().requires_grad_(), lams()
    weights = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (mix_styles(x, lam, PERM) * weights).sum().backward()
    mu, sig = style_statistics(x.detach())
    sig_mix = lam * sig + (1 - lam) * sig[PERM]
    torch.testing.assert_close(x.grad, weights * sig_mix / sig)


def test_beta_draws_follow_torch_distributions_beta_under_the_same_seed():
    torch.manual_seed(5)
    expected = torch.distributions.Beta(0.1, 0.1).sample((B, 1, 1, 1))
    torch.manual_seed(5)
    torch.testing.assert_close(beta_draws(0.1, B), expected)
    many = beta_draws(2.0, 20000, torch.Generator().manual_seed(0)).flatten()
    assert ((0 <= many) & (many <= 1)).all()
    # Beta(2, 2): mean 1/2, variance 1/20.
    assert abs(float(many.mean()) - 0.5) < 0.01 and abs(float(many.var()) - 0.05) < 0.003


def test_random_permutation_is_randperm_and_crossdomain_swaps_halves():
    generator = torch.Generator().manual_seed(3)
    perm = mixing_permutation(8, "random", generator)
    assert torch.equal(perm, torch.randperm(8, generator=torch.Generator().manual_seed(3)))
    for seed in range(20):
        perm = mixing_permutation(8, "crossdomain", torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(8))
        assert set(perm[:4].tolist()) == {4, 5, 6, 7} and set(perm[4:].tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="'styles' is not allowed; allowed: random, crossdomain"):
        mixing_permutation(8, "styles")


def test_module_is_identity_in_eval_mode_and_with_p_zero():
    x = features()
    module = MixStyle(p=1.0).eval()
    assert module(x) is x and module.calls == 0
    module = MixStyle(p=0.0).train()
    for _ in range(20):
        assert module(x) is x
    assert (module.calls, module.mixed) == (20, 0)


def test_module_mixes_with_probability_p_and_its_draws():
    x = features()
    module = MixStyle(p=1.0, alpha=0.3, generator=torch.Generator().manual_seed(7)).train()
    out = module(x)
    replay = torch.Generator().manual_seed(7)
    torch.rand((), generator=replay)
    lam = beta_draws(0.3, B, replay).double()
    perm = torch.randperm(B, generator=replay)
    torch.testing.assert_close(out, mix_styles(x, lam, perm))
    module = MixStyle(p=0.3, generator=torch.Generator().manual_seed(0)).train()
    for _ in range(4000):
        module(x)
    assert module.calls == 4000 and abs(module.mixed / 4000 - 0.3) < 0.03


def test_module_is_reproducible_under_a_generator_or_torch_seed():
    x = features()
    modules = [MixStyle(p=0.5, generator=torch.Generator().manual_seed(11)).train() for _ in range(2)]
    torch.testing.assert_close([modules[0](x) for _ in range(6)], [modules[1](x) for _ in range(6)])
    module = MixStyle(p=0.5).train()
    torch.manual_seed(4)
    first = [module(x) for _ in range(6)]
    torch.manual_seed(4)
    second = [module(x) for _ in range(6)]
    torch.testing.assert_close(first, second)
    assert any(not torch.equal(out, x) for out in first)


def test_unknown_mix_is_refused():
    with pytest.raises(ValueError, match="mix 'domain' is not allowed; allowed: random, crossdomain"):
        MixStyle(mix="domain")
