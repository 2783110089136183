"""MixStyle (Zhou et al., ICLR 2021): mix the instance-level feature statistics of
the samples of a batch.

For features ``x`` of shape (B, C, H, W), per sample b and channel c,
``mu = mean_HW(x)`` and ``sig = sqrt(var_HW(x) + eps)``, with the *unbiased* variance and
both *detached* (no gradient flows through the statistics). With ``lam ~ Beta(alpha, alpha)``
per sample and a permutation ``perm`` of the batch,

    out = (x - mu) / sig * (lam sig + (1 - lam) sig[perm]) + (lam mu + (1 - lam) mu[perm]).

This is the operation as the official code runs it (Dassl c61a1b5
``dassl/modeling/ops/mixstyle.py:53-124``; the same code in mixstyle-release
``reid/models/mixstyle.py:53-122``): identity unless training; otherwise applied with
probability ``p``, one coin per call; defaults p 0.5, alpha 0.1, eps 1e-6, random mixing.

The draws (coin, lam, perm) are made on the host, as the official code makes them, from
``generator`` or, without one, from torch's default CPU generator, which DomainBed's
train.py seeds with the run's seed: a run is reproducible and a step needs no
device synchronisation. Unlike the official code's ``random.random()`` coin, the coin
is torch's too, so that one seed fixes every draw.
"""

from __future__ import annotations

import torch
from torch import nn

#: How the batch is paired with the samples whose statistics it takes (Dassl l.104-115).
#: ``random``: ``randperm(B)``, which needs no domain labels and so is MixStyle's
#: single-source form. ``crossdomain``: the batch is taken as two domains, its halves;
#: each sample takes a random sample's statistics from the other half.
MIXES = ("random", "crossdomain")
#: The official defaults (Dassl l.60).
P, ALPHA, EPS = 0.5, 0.1, 1e-6


def style_statistics(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached per-(sample, channel) spatial mean and ``sqrt(unbiased variance + eps)``,
    each of shape (B, C, 1, 1) (Dassl l.96-99). A 1 x 1 map has no unbiased variance."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sig = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    return mu.detach(), sig.detach()


def mix_styles(x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """MixStyle with given draws: ``lam`` of shape (B, 1, 1, 1) and ``perm``, a permutation
    of the batch (Dassl l.118-124). The output's per-(b, c) spatial mean is
    ``lam mu + (1 - lam) mu[perm]``; its standard deviation is ``sig_mix`` up to the eps
    in ``sig``."""
    mu, sig = style_statistics(x, eps)
    x_normed = (x - mu) / sig
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return x_normed * sig_mix + mu_mix


def mixing_permutation(batch_size: int, mix: str = "random", generator: torch.Generator | None = None) -> torch.Tensor:
    """The permutation of :func:`mix_styles` for ``mix`` (one of :data:`MIXES`), drawn on
    the host. ``crossdomain`` reverses the batch, splits it in halves and shuffles each
    (Dassl l.109-115): the first half takes statistics from the second and vice versa
    (with an odd B, the first B // 2 + 1 positions draw from the last B // 2 + 1
    samples, the middle one among them)."""
    if mix == "random":
        return torch.randperm(batch_size, generator=generator)
    if mix == "crossdomain":
        first, second = torch.arange(batch_size - 1, -1, -1).chunk(2)
        return torch.cat([half[torch.randperm(len(half), generator=generator)] for half in (first, second)])
    raise ValueError(f"mix {mix!r} is not allowed; allowed: {', '.join(MIXES)}")


def beta_draws(alpha: float, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``lam ~ Beta(alpha, alpha)``, one per sample, shape (B, 1, 1, 1), on the host.

    Drawn as the first coordinate of a Dirichlet(alpha, alpha) sample, as
    ``torch.distributions.Beta`` draws it (the official code's sampler, Dassl l.63, 102),
    through the op that accepts a generator."""
    concentration = torch.full((batch_size, 1, 1, 1, 2), float(alpha))
    return torch._sample_dirichlet(concentration, generator=generator)[..., 0]


class MixStyle(nn.Module):
    """MixStyle as a module, placed after a network stage: identity in eval mode; in
    training mode, :func:`mix_styles` with probability ``p`` per call, with fresh lam
    and perm each time. ``calls`` and ``mixed`` count the training-mode calls and those
    that mixed (a diagnostic; the module has no parameters or buffers)."""

    def __init__(self, p: float = P, alpha: float = ALPHA, eps: float = EPS, mix: str = "random",
                 generator: torch.Generator | None = None):
        super().__init__()
        if mix not in MIXES:
            raise ValueError(f"mix {mix!r} is not allowed; allowed: {', '.join(MIXES)}")
        self.p, self.alpha, self.eps, self.mix = p, alpha, eps, mix
        self.generator = generator
        self.calls = 0
        self.mixed = 0

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, eps={self.eps}, mix={self.mix}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        self.calls += 1
        # Mixes with probability p (u < p), as Dassl's ``random.random() > p -> identity``.
        if not torch.rand((), generator=self.generator) < self.p:
            return x
        self.mixed += 1
        batch_size = x.shape[0]
        lam = beta_draws(self.alpha, batch_size, self.generator).to(x.device, x.dtype, non_blocking=True)
        perm = mixing_permutation(batch_size, self.mix, self.generator).to(x.device, non_blocking=True)
        return mix_styles(x, lam, perm, self.eps)
