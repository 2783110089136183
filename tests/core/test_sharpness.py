"""GSAM's and SAGM's rules against their closed forms on a quadratic
``f(w) = 1/2 w'Aw - b'w``: ``g = Aw - b``, ``g_p = A(w + e) - b``, and one plain SGD
step of size ``eta`` along the rule's direction."""

from __future__ import annotations

import pytest
import torch

from domainbed_dge.core.sharpness import EPS, GSAMRule, SAGMRule, cosine, orthogonal_component

ETA = 0.1


@pytest.fixture
def quadratic():
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)  # symmetric positive definite
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    w = torch.randn(6, generator=generator, dtype=torch.float64)
    return A, b, w


def gradient(A, b, w):
    return A @ w - b


def step(rule, A, b, w):
    """One SGD step of the rule on the quadratic: ``w - eta d``, and ``d``, ``g``, ``g_p``."""
    g = gradient(A, b, w)
    g_p = gradient(A, b, w + rule.perturbation(g))
    d = rule.direction(g, g_p)
    return w - ETA * d, d, g, g_p


def test_gsam_step_is_its_closed_form(quadratic):
    A, b, w = quadratic
    rho, alpha = 0.3, 0.4
    new_w, d, g, g_p = step(GSAMRule(rho, alpha), A, b, w)
    # g_p = g + rho A g / |g|, because the quadratic's gradient is affine.
    expected_g_p = g + rho * A @ g / (g.norm() + EPS)
    torch.testing.assert_close(g_p, expected_g_p)
    g_perp = g - (g @ expected_g_p) / (expected_g_p @ expected_g_p) * expected_g_p
    torch.testing.assert_close(new_w, w - ETA * (expected_g_p - alpha * g_perp))
    assert abs(g_perp @ expected_g_p) < 1e-10 and g_perp.norm() > 1e-3
    # The step descends the perturbed loss exactly as SAM's does.
    torch.testing.assert_close(d @ g_p, g_p @ g_p)


def test_gsam_with_alpha_zero_is_sam(quadratic):
    A, b, w = quadratic
    g = gradient(A, b, w)
    sam_w = w - ETA * gradient(A, b, w + 0.3 * g / g.norm())
    torch.testing.assert_close(step(GSAMRule(0.3, 0.0), A, b, w)[0], sam_w)
    assert not torch.allclose(step(GSAMRule(0.3, 0.5), A, b, w)[0], sam_w)


@pytest.mark.parametrize("rule", [GSAMRule(0.0, 0.0), SAGMRule(0.0, 0.0)], ids=["GSAM", "SAGM"])
def test_no_perturbation_is_one_plain_step(quadratic, rule):
    A, b, w = quadratic
    torch.testing.assert_close(step(rule, A, b, w)[0], w - ETA * gradient(A, b, w))


def test_sagm_step_is_its_closed_form(quadratic):
    A, b, w = quadratic
    rho, alpha = 0.3, 0.05
    new_w, _, g, g_p = step(SAGMRule(rho, alpha), A, b, w)
    expected_g_p = A @ (w + rho * g / (g.norm() + EPS) - alpha * g) - b
    torch.testing.assert_close(g_p, expected_g_p)
    torch.testing.assert_close(new_w, w - ETA * (g + expected_g_p) / 2)
    # alpha moves the perturbation off SAM's: another g_p.
    assert not torch.allclose(g_p, gradient(A, b, w + rho * g / g.norm()))


def test_perturbations_have_their_lengths(quadratic):
    A, b, w = quadratic
    g = gradient(A, b, w)
    assert GSAMRule(0.3, 0.4).perturbation(g).norm().item() == pytest.approx(0.3)
    # SAGM: rho/|g| - alpha along g.
    assert SAGMRule(0.3, 0.05).perturbation(g).norm().item() == pytest.approx(abs(0.3 - 0.05 * g.norm().item()))


def test_a_zero_gradient_gives_no_perturbation_and_no_nan():
    zero = torch.zeros(4)
    for rule in (GSAMRule(0.05, 0.1), SAGMRule(0.05, 0.001)):
        assert torch.equal(rule.perturbation(zero), zero)
        assert torch.equal(rule.direction(zero, zero), zero)
    g = torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert torch.equal(orthogonal_component(g, zero), g)
    assert cosine(g, zero).item() == 0.0
