"""RandConv and Pro-RandConv as DomainBed algorithms: ERM on randomly convolved inputs.

The random convolution is applied to the batch exactly as DomainBed's loader gives it:
ImageNet-normalised RGB for the RGB datasets, pixels in [0, 1] for the MNIST datasets.
RandConv's released code also convolves the normalised input (digits:
``Normalize(0.5, 0.5)``, train_digits.py:50, 61, 70) and never clamps the output
(``clamp_output`` off in every script); Pro-RandConv's ``tanh`` puts its output in
(-1, 1) whatever the input's range. ``randconv_pixel_range`` / ``prorandconv_pixel_range``
``signed`` apply the draws to [0, 1] pixels as to the [-1, 1] pixels of the authors'
digits code and map the result back (``core.random_convolutions.in_signed_range``).
Evaluation (``predict``) sees clean images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from domainbed_dge.core.random_convolutions import consistency_loss
from domainbed_dge.plugin.objective import SingleObjective


class RandomConvolutionObjective(SingleObjective):
    """One random convolution (RandConv) or progressive block (Pro-RandConv), drawn
    from torch's seeded generator, per training step for the whole concatenated batch;
    cross-entropy on the convolved batch, plus ``lambda`` times RandConv's consistency
    loss over three views when ``lambda > 0``; one optimizer step.

    ``update`` returns ``loss`` (the cross-entropy on the first view), the draw's
    diagnostics (``randconv_kernel_size`` and ``randconv_identity_fraction`` or
    ``randconv_mix_weight``; ``prorandconv_repeats``, ``prorandconv_smoothing_sigma``,
    ``prorandconv_offset_std``) and, with a consistency weight > 0,
    ``consistency_loss``.
    """

    def update(self, minibatches, unlabeled=None):
        x, y = self.batch(minibatches)
        convolution = self.rule.sample(x.shape)
        with torch.no_grad():
            first_view = convolution(x)
        logits = self.predict(first_view)
        loss = F.cross_entropy(logits, y)
        results = {"loss": loss.item(), **convolution.diagnostics()}
        objective = loss
        if self.rule.consistency_weight > 0:
            with torch.no_grad():
                views = self.rule.consistency_inputs(x, first_view)
            consistency = consistency_loss([logits, *(self.predict(view) for view in views)])
            objective = loss + self.rule.consistency_weight * consistency
            results["consistency_loss"] = consistency.item()
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return results
