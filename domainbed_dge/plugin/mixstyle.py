"""MixStyle in DomainBed: ERM's network and objective, with ``core.mixstyle.MixStyle``
called on the outputs of chosen stages of DomainBed's featurizer.

The module is inserted with forward hooks, so DomainBed's networks are used unedited.
One MixStyle instance serves every hooked stage, and each call draws its own coin, lam
and perm, as in the official ResNet (Dassl c61a1b5
``dassl/modeling/backbone/resnet.py:190-204``).
Stages, numbered 1-3 (``mixstyle_layers``), the stages Dassl's MixStyle ResNets may
follow (the last stage, whose output is pooled into the features, is not one of them):

- ``ResNet`` (torchvision's, or timm's with ``resnet50_augmix``, inside DomainBed's
  ``networks.ResNet``): stage i is ``network.layer{i}``; MixStyle follows it. The default
  is the authors' setting for the dataset: after layers 1-2 on OfficeHome
  (``resnet18_ms_l12``), after layers 1-3 on PACS (``resnet18_ms_l123``) and on the
  datasets the authors did not run.
- ``MNIST_CNN``: stage i is block i, ``conv{i}`` -> ReLU -> GroupNorm ``bn{i-1}``; MixStyle
  follows the block's GroupNorm, i.e. the block's output, as it follows a ResNet stage's
  output. The default, after blocks 1-3, mirrors "after the first three of four
  stages": the bottom layers, where style lives, and never the last, whose output
  is pooled into the features (the authors' advice, mixstyle-release
  ``README.md:139-143``). Placed before the GroupNorm, MixStyle would have its mixed
  statistics partly undone by that normalisation.

The hooks mix only while the hooked stage is in training mode: in eval mode the
network's predictions are exactly those of the network without MixStyle.
"""

from __future__ import annotations

import torch.nn.functional as F
from domainbed import networks
from torch import nn

from domainbed_dge.plugin.objective import SingleObjective


def mixstyle_stages(featurizer: nn.Module, layers: list[int]) -> list[nn.Module]:
    """The modules of ``featurizer`` after which MixStyle goes, for stages ``layers``
    (numbers in 1..3, see the module docstring); other featurizers are refused."""
    if isinstance(featurizer, networks.ResNet):
        return [getattr(featurizer.network, f"layer{stage}") for stage in layers]
    if isinstance(featurizer, networks.MNIST_CNN):
        return [getattr(featurizer, f"bn{stage - 1}") for stage in layers]
    raise NotImplementedError(
        f"MixStyle: DomainBed's featurizer {type(featurizer).__name__} is not supported; MixStyle is inserted after "
        "the stages of ResNet (layer1-layer3, 224 x 224 images) or MNIST_CNN (blocks 1-3, 28 x 28 images)")


class MixStyleEngine(SingleObjective):
    """ERM on the concatenated batch, with MixStyle after the featurizer's stages
    ``mixstyle_layers``; ``self.rule`` is the MixStyle module."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        for stage in mixstyle_stages(self.featurizer, hparams["mixstyle_layers"]):
            stage.register_forward_hook(self._mix_styles)

    def _mix_styles(self, stage, inputs, output):
        return self.rule(output) if stage.training else None

    def update(self, minibatches, unlabeled=None):
        x, y = self.batch(minibatches)
        calls, mixed = self.rule.calls, self.rule.mixed
        loss = F.cross_entropy(self.predict(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        calls, mixed = self.rule.calls - calls, self.rule.mixed - mixed
        return {"loss": loss.item(), "mixstyle_applied_fraction": mixed / calls if calls else 0.0}
