"""The sharpness engine: GSAM and SAGM on ERM's network and concatenated batch.

One step (GSAM: big_vision ``gsam.py:69-122``, PyTorch ``gsam/gsam.py:152-188``;
SAGM: ``domainbed/sagm/sagm.py:145-180``): the loss and its gradient ``g`` at the
weights ``w``; the weights moved in place to ``w + e``, ``e`` the rule's perturbation;
the gradient ``g_p`` there, on the same batch; ``w`` put back from a copy (not by
subtracting ``e``, which would leave rounding error); the parameters' gradients set to
the rule's direction ``d``; one optimizer step. The rules are
:mod:`domainbed_dge.core.sharpness`.

BatchNorm's running statistics see the batch once per step, as the official codes
intend by zeroing BN's momentum for the perturbed pass: here every BatchNorm buffer
(``running_mean``, ``running_var``, ``num_batches_tracked``) is saved after the clean
pass and put back after the perturbed one, which is exact whatever the momentum
(including ``momentum=None``'s cumulative average). It matters for DomainBed's ResNets,
whose BN trains unless ``freeze_bn`` is set (default false); MNIST_CNN has GroupNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from domainbed_dge.core.sharpness import cosine
from domainbed_dge.plugin.objective import SingleObjective


def batchnorm_buffers(network: torch.nn.Module) -> list[torch.Tensor]:
    """Every BatchNorm module's running statistics and batch count."""
    return [
        buffer
        for module in network.modules()
        if isinstance(module, _BatchNorm)
        for buffer in module.buffers(recurse=False)
    ]


def _restore(tensors: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)


class SharpnessAware(SingleObjective):
    """ERM's objective on the concatenated batch, stepped along a sharpness-aware
    direction (``self.rule``: a GSAM or SAGM rule). A step whose losses or gradients
    are not finite is skipped, leaving weights, BatchNorm statistics and optimizer
    untouched, and counted in ``skipped_nonfinite``."""

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def _loss_and_gradient(self, x, y, parameters) -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(self.predict(x), y)
        grads = torch.autograd.grad(loss, parameters)
        return loss.detach(), torch.cat([g.reshape(-1) for g in grads])

    def update(self, minibatches, unlabeled=None):
        x, y = self.batch(minibatches)
        parameters = self.trainable
        sizes = [p.numel() for p in parameters]
        weights = [p.detach().clone() for p in parameters]
        statistics = batchnorm_buffers(self.network)
        statistics_before = [s.clone() for s in statistics]

        loss, g = self._loss_and_gradient(x, y, parameters)
        statistics_clean = [s.clone() for s in statistics]
        e = self.rule.perturbation(g)
        with torch.no_grad():
            for p, piece in zip(parameters, e.split(sizes)):
                p.add_(piece.view_as(p))
        loss_perturbed, g_p = self._loss_and_gradient(x, y, parameters)
        _restore(parameters, weights)
        d = self.rule.direction(g, g_p)

        # One host transfer for the finiteness check and the diagnostics.
        checked = {"loss": loss, "loss_perturbed": loss_perturbed, "grad_norm": g.norm(),
                   "perturbed_grad_norm": g_p.norm(), "direction_norm": d.norm()}
        reported = {"perturbation_norm": e.norm(), "perturbed_grad_cosine": cosine(g, g_p)}
        host = dict(zip([*checked, *reported], torch.stack([*checked.values(), *reported.values()]).tolist()))
        if not all(math.isfinite(host[name]) for name in checked):
            _restore(statistics, statistics_before)
            return {"loss": host["loss"], "skipped_nonfinite": 1.0}
        _restore(statistics, statistics_clean)
        for p, piece in zip(parameters, d.split(sizes)):
            p.grad = piece.view_as(p)
        self.optimizer.step()
        grad_norm = host["grad_norm"]
        return {
            "loss": host["loss"],
            "loss_perturbed": host["loss_perturbed"],
            "perturbation_norm": host["perturbation_norm"],
            "perturbed_grad_cosine": host["perturbed_grad_cosine"],
            "direction_norm_ratio": host["direction_norm"] / grad_norm if grad_norm > 0 else 0.0,
            "skipped_nonfinite": 0.0,
        }
