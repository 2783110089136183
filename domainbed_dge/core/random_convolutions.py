"""Random convolutions of the input image: RandConv and Pro-RandConv.

**RandConv** (Xu et al., "Robust and Generalizable Visual Representation Learning via
Random Convolutions", ICLR 2021; official code wildphoton/RandConv@861a2319dc28).
Each training step draws one random convolution for the whole batch
(``lib/networks/rand_conv.py``): a kernel size k uniformly from a list (the digits
scripts' ``-ks 1 3 5 7``, ``exp_mnist10k.sh``:13,16), weights He-normal
``w ~ N(0, 1 / (C_in k^2))`` (``kaiming_normal_``, l.156-157), no bias, stride 1,
padding ``k // 2``, ``C_out = C_in``. Two variants: ``img`` keeps the image unchanged
with probability ``identity_prob`` and otherwise returns ``conv(x)`` (l.88-98); ``mix``
returns ``a conv(x) + (1 - a) x`` with ``a ~ U(0, 1)`` per draw (l.80, 93, 117-118).
The consistency loss (``randconv_trainer.py``:388-411) is the mean KL divergence of
three views' predictions from their clamped mixture, :func:`consistency_loss`.

**Pro-RandConv** (Choi et al., "Progressive Random Convolutions for Single Domain
Generalization", CVPR 2023, arXiv 2304.00424). No official code exists. Per
mini-batch, one random block is drawn and applied L ~ U{1..L_max} times with the same
parameters. The block: a deformable 3 x 3 convolution whose He-normal weights are
multiplied by a Gaussian ``g[i, j] = exp(-(i^2 + j^2) / (2 sigma_g^2))`` (centre 1,
``sigma_g ~ U(eps, 1)``) and whose offsets are ``N(0, sigma_Delta^2)`` with
``sigma_Delta ~ U(eps, b_Delta)``; standardisation of each (image, channel) over H x W;
the affine ``gamma_c z + beta_c`` with ``gamma, beta ~ N(0, sigma_a^2)``; ``tanh``. The
abstract states the progressive stacking, the deformable offsets and the affine
transformation, all drawn per mini-batch; every constant (k = 3, L_max = 10,
b_Delta = 0.2 for 32 x 32 and 0.5 for 224 x 224 images, sigma_a = 0.5, eps) comes from
third-party re-implementations that describe the paper's Sec. 3 and implementation
details, whose text could not be read here: unverified (see the README's list).

Both act on the batch as it is given (``as_given``), or, with ``pixel_range="signed"``,
on [0, 1] pixels mapped to [-1, 1] as RandConv's digits code feeds them
(``Normalize(0.5, 0.5)``, ``train_digits.py``:50, 61, 70), the result mapped back:
``(draw(2x - 1) + 1) / 2`` (:func:`in_signed_range`). A bias-free convolution then sees a
dark background as -1, not 0, so a kernel whose taps sum below 0 turns a dark ground
light, as the authors' runs did, where on [0, 1] pixels it leaves the ground at 0.

Every draw comes from ``generator`` (a CPU ``torch.Generator``; ``None``: torch's
default CPU generator, which DomainBed's ``train.py`` seeds), never from Python's
``random``, so that a run is reproducible and the draws do not depend on the device.
Parameters are drawn on the host and moved to the batch's device when applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

#: RandConv's variants: keep the image with probability ``identity_prob`` or convolve
#: it (``img``), or blend the convolved and the original image (``mix``).
VARIANTS = ("img", "mix")
#: How RandConv's two extra consistency views are made: as the released digits
#: scripts make them (RandConv applied again to the first view, ``RC'(RC(x))``), or as
#: three independent draws on the clean image (``RC'(x)``).
CONSISTENCY_VIEWS = ("released", "independent")
#: The pixel range a draw acts in: the batch as given, or [0, 1] pixels as [-1, 1].
PIXEL_RANGES = ("as_given", "signed")
#: The released digits scripts' kernel sizes (exp_mnist10k.sh:13,16).
KERNEL_SIZES = (1, 3, 5, 7)
#: The clamp of the consistency loss's mixture (randconv_trainer.py:404).
MIXTURE_FLOOR = 1e-7
#: Pro-RandConv's lower bound ``eps`` of ``sigma_g`` and ``sigma_Delta`` (the paper,
#: as re-implementations quote it, says only "a small value"; one uses 1e-4).
PRO_SMALLEST_STD = 1e-4
#: Added to the variance in Pro-RandConv's standardisation, as instance norm does.
STANDARDIZE_EPS = 1e-5


def he_normal_kernel(channels: int, kernel_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``channels x channels x k x k`` kernel with i.i.d. ``N(0, 1 / (channels k^2))``
    entries: ``kaiming_normal_`` with gain 1 and fan-in ``channels k^2``."""
    weight = torch.randn(channels, channels, kernel_size, kernel_size, generator=generator)
    return weight / math.sqrt(channels * kernel_size**2)


def in_signed_range(transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``(transform(2x - 1) + 1) / 2``: ``transform`` applied to [0, 1] pixels as to the
    [-1, 1] pixels of RandConv's digits code, its output brought back to [0, 1]'s scale
    (the identity stays the identity; zero padding is grey, as there)."""
    return (transform(2 * x - 1) + 1) / 2


def check_pixel_range(pixel_range: str) -> None:
    if pixel_range not in PIXEL_RANGES:
        raise ValueError(f"pixel range {pixel_range!r} is not allowed; allowed: {', '.join(PIXEL_RANGES)}")


def uniform(low: float, high: float, generator: torch.Generator | None = None) -> float:
    """One draw of ``U(low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


# --- RandConv ----------------------------------------------------------------------


@dataclass(frozen=True)
class RandomConvolution:
    """One RandConv draw: ``weight`` (C x C x k x k, on the host), ``identity`` (the
    ``img`` variant kept the image), ``mix_weight`` (``a`` of the ``mix`` variant,
    ``None`` for ``img``), ``signed`` (it acts on [0, 1] pixels as on [-1, 1] ones)."""

    weight: torch.Tensor
    identity: bool = False
    mix_weight: float | None = None
    signed: bool = False

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[-1]

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """``conv(x)``: stride 1, padding ``k // 2``, no bias."""
        weight = self.weight.to(x.device, x.dtype, non_blocking=True)
        return F.conv2d(x, weight, padding=self.kernel_size // 2)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The draw in the input's own range: ``x``, ``conv(x)`` or ``a conv(x) + (1 - a) x``."""
        if self.identity:
            return x
        if self.mix_weight is not None:
            return self.mix_weight * self.convolve(x) + (1 - self.mix_weight) * x
        return self.convolve(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return in_signed_range(self.transform, x) if self.signed else self.transform(x)

    def diagnostics(self) -> dict[str, float]:
        results = {"randconv_kernel_size": float(self.kernel_size)}
        if self.mix_weight is None:
            results["randconv_identity_fraction"] = float(self.identity)
        else:
            results["randconv_mix_weight"] = self.mix_weight
        return results


class RandConv:
    """RandConv's augmenter: :meth:`sample` draws one :class:`RandomConvolution` per
    batch. ``consistency_weight`` (lambda) and ``consistency_views`` (one of
    :data:`CONSISTENCY_VIEWS`) say how the trainer adds :func:`consistency_loss`;
    ``pixel_range`` (one of :data:`PIXEL_RANGES`) what range the draws act in."""

    def __init__(
        self,
        kernel_sizes: Sequence[int] = KERNEL_SIZES,
        variant: str = "img",
        identity_prob: float = 0.5,
        consistency_weight: float = 0.0,
        consistency_views: str = "released",
        pixel_range: str = "as_given",
    ):
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes {list(kernel_sizes)!r} are not allowed; allowed: odd integers >= 1")
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} is not allowed; allowed: {', '.join(VARIANTS)}")
        if not 0 <= identity_prob <= 1:
            raise ValueError(f"identity_prob {identity_prob!r} is not allowed; allowed: a number in [0, 1]")
        if consistency_views not in CONSISTENCY_VIEWS:
            raise ValueError(f"consistency views {consistency_views!r} are not allowed; "
                             f"allowed: {', '.join(CONSISTENCY_VIEWS)}")
        check_pixel_range(pixel_range)
        self.kernel_sizes = tuple(kernel_sizes)
        self.variant = variant
        self.identity_prob = identity_prob
        self.consistency_weight = consistency_weight
        self.consistency_views = consistency_views
        self.signed = pixel_range == "signed"

    def sample(self, shape: torch.Size, generator: torch.Generator | None = None) -> RandomConvolution:
        """One draw for a batch of ``shape`` (N, C, H, W): k uniformly from the list,
        He-normal weights, then the variant's identity coin or mixing weight."""
        index = int(torch.randint(len(self.kernel_sizes), (), generator=generator))
        weight = he_normal_kernel(shape[1], self.kernel_sizes[index], generator)
        if self.variant == "mix":
            return RandomConvolution(weight, mix_weight=float(torch.rand((), generator=generator)), signed=self.signed)
        identity = float(torch.rand((), generator=generator)) < self.identity_prob
        return RandomConvolution(weight, identity=identity, signed=self.signed)

    def consistency_inputs(
        self, x: torch.Tensor, first_view: torch.Tensor, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The two extra views of the consistency loss, each from a fresh draw: of the
        first view (``released``: ``randconv_trainer.py``:381 overwrites ``inputs`` with
        the first view, l.393-396 convolve it again) or of the clean batch
        (``independent``)."""
        source = first_view if self.consistency_views == "released" else x
        return [self.sample(x.shape, generator)(source) for _ in range(2)]


def consistency_loss(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """RandConv's consistency loss (``randconv_trainer.py``:398-406): with
    ``p_i = softmax(logits_i)`` and ``M = clamp(mean_i p_i, 1e-7, 1)``, the mean over
    views of ``KL(p_i || M)``, each averaged over the batch (``batchmean``)."""
    probabilities = [F.softmax(z, dim=1) for z in logits]
    log_mixture = torch.clamp(torch.stack(probabilities).mean(0), MIXTURE_FLOOR, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probabilities) / len(probabilities)


# --- Pro-RandConv ------------------------------------------------------------------


def gaussian_smoothing(kernel_size: int, sigma: float) -> torch.Tensor:
    """``g[i, j] = exp(-(i^2 + j^2) / (2 sigma^2))`` for i, j in ``-(k//2) .. k//2``: 1
    at the centre, unnormalised, so that the centre tap keeps its He-normal draw."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return torch.exp(-squared / (2 * sigma**2)).float()


@dataclass(frozen=True)
class RandomConvolutionBlock:
    """One Pro-RandConv block (on the host): a deformable convolution with ``weight``
    (C x C x k x k) and ``offset`` (1 x 2k^2 x H x W, one field shared by the batch),
    then per-(image, channel) standardisation, ``gamma_c z + beta_c`` and ``tanh``.
    ``smoothing_sigma`` and ``offset_std`` are the draws that made them."""

    weight: torch.Tensor
    offset: torch.Tensor
    gamma: torch.Tensor
    beta: torch.Tensor
    smoothing_sigma: float
    offset_std: float

    def deform(self, x: torch.Tensor) -> torch.Tensor:
        """The deformable convolution (torchvision's ``deform_conv2d``, stride 1,
        padding ``k // 2``, no bias, no modulation mask)."""
        weight = self.weight.to(x.device, x.dtype, non_blocking=True)
        offset = self.offset.to(x.device, x.dtype, non_blocking=True).expand(x.shape[0], -1, -1, -1)
        return deform_conv2d(x, offset, weight, padding=self.weight.shape[-1] // 2)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Deformable convolution, standardisation over H x W (biased variance), affine."""
        z = self.deform(x)
        mean = z.mean(dim=(2, 3), keepdim=True)
        variance = z.var(dim=(2, 3), unbiased=False, keepdim=True)
        z = (z - mean) / torch.sqrt(variance + STANDARDIZE_EPS)
        gamma = self.gamma.to(x.device, x.dtype, non_blocking=True).view(1, -1, 1, 1)
        beta = self.beta.to(x.device, x.dtype, non_blocking=True).view(1, -1, 1, 1)
        return gamma * z + beta

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_activation(x))


@dataclass(frozen=True)
class ProgressiveConvolution:
    """One Pro-RandConv draw: ``block`` applied ``repeats`` (L) times; ``signed``: to
    [0, 1] pixels as to [-1, 1] ones."""

    block: RandomConvolutionBlock
    repeats: int
    signed: bool = False

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The block applied L times, in the input's own range."""
        for _ in range(self.repeats):
            x = self.block(x)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return in_signed_range(self.transform, x) if self.signed else self.transform(x)

    def diagnostics(self) -> dict[str, float]:
        return {
            "prorandconv_repeats": float(self.repeats),
            "prorandconv_smoothing_sigma": self.block.smoothing_sigma,
            "prorandconv_offset_std": self.block.offset_std,
        }


class ProgressiveRandConv:
    """Pro-RandConv's augmenter: :meth:`sample` draws one block and its number of
    repeats per batch. ``max_repeats`` is L_max, ``offset_std_bound`` b_Delta,
    ``affine_std`` the std of gamma and beta, ``pixel_range`` (one of
    :data:`PIXEL_RANGES`) what range the draws act in. It trains with cross-entropy only
    (``consistency_weight`` 0)."""

    consistency_weight = 0.0

    def __init__(self, max_repeats: int = 10, offset_std_bound: float = 0.5, affine_std: float = 0.5,
                 kernel_size: int = 3, smallest_std: float = PRO_SMALLEST_STD, pixel_range: str = "as_given"):
        if max_repeats < 1:
            raise ValueError(f"max_repeats {max_repeats!r} is not allowed; allowed: an integer >= 1")
        if offset_std_bound < smallest_std or affine_std < 0:
            raise ValueError(f"offset_std_bound {offset_std_bound!r} / affine_std {affine_std!r} are not allowed; "
                             f"allowed: offset_std_bound >= {smallest_std}, affine_std >= 0")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size!r} is not allowed; allowed: an odd integer >= 1")
        check_pixel_range(pixel_range)
        self.max_repeats = max_repeats
        self.offset_std_bound = offset_std_bound
        self.affine_std = affine_std
        self.kernel_size = kernel_size
        self.smallest_std = smallest_std
        self.signed = pixel_range == "signed"

    def sample_block(self, shape: torch.Size, generator: torch.Generator | None = None) -> RandomConvolutionBlock:
        """One block for a batch of ``shape`` (N, C, H, W)."""
        _, channels, height, width = shape
        k = self.kernel_size
        smoothing_sigma = uniform(self.smallest_std, 1.0, generator)
        weight = he_normal_kernel(channels, k, generator) * gaussian_smoothing(k, smoothing_sigma)
        offset_std = uniform(self.smallest_std, self.offset_std_bound, generator)
        offset = offset_std * torch.randn(1, 2 * k * k, height, width, generator=generator)
        gamma = self.affine_std * torch.randn(channels, generator=generator)
        beta = self.affine_std * torch.randn(channels, generator=generator)
        return RandomConvolutionBlock(weight, offset, gamma, beta, smoothing_sigma, offset_std)

    def sample(self, shape: torch.Size, generator: torch.Generator | None = None) -> ProgressiveConvolution:
        """One block and ``L ~ U{1..max_repeats}``."""
        block = self.sample_block(shape, generator)
        repeats = int(torch.randint(1, self.max_repeats + 1, (), generator=generator))
        return ProgressiveConvolution(block, repeats, self.signed)
