"""The base of the methods that train ERM's objective, changed: sharpness-aware steps,
random convolutions of the input, feature-statistics mixing.

Like DomainBed's ERM, such a method concatenates the training environments'
minibatches into one batch (SDG: the one source batch; MDG: every environment's) and
trains ERM's network on it, here under the comparison's optimiser. What it changes is
the object its registry entry builds (``self.rule``) and its :meth:`update`.
"""

from __future__ import annotations

import torch
from domainbed import algorithms as host
from domainbed import networks

from domainbed_dge.plugin import methods
from domainbed_dge.plugin.checks import check_hparams
from domainbed_dge.plugin.optimizers import make_optimizer


class SingleObjective(host.Algorithm):
    """ERM's network and batch under the comparison's optimiser; ``self.rule`` is the
    method's core object, built from the run's hyperparameters by its registry entry."""

    method: methods.Method

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        check_hparams(self.method.name, hparams)
        self.featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            self.featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"]
        )
        self.network = torch.nn.Sequential(self.featurizer, self.classifier)
        self.rule = self.method.build(hparams)
        self.optimizer = make_optimizer(self.network.parameters(), hparams)

    @staticmethod
    def batch(minibatches) -> tuple[torch.Tensor, torch.Tensor]:
        """The training environments' minibatches as one batch, as ERM takes them."""
        return torch.cat([x for x, _ in minibatches]), torch.cat([y for _, y in minibatches])

    def predict(self, x):
        return self.network(x)
