"""DomainBed's own algorithms under the plugin's keys: the augmented views of the
source batch as their domains (SDG), and the comparison's optimiser.

``get_algorithm_class`` (wrapped by ``plugin.algorithms.register``) returns, for each
of DomainBed's algorithms, the subclass :func:`hosted` makes of it. It has the same
name, so train.py, its records and its ``model.pkl`` are as DomainBed writes them,
and with the plugin's keys at their defaults it is DomainBed's algorithm exactly: no
extra random draw, buffer or optimiser. Its keys (``hparams.HOST_HPARAMS``):

* ``dge_num_views`` K >= 2, SDG only (train.py passes ``num_domains`` 1): the
  algorithm is built with ``num_domains`` K and its ``update`` gets the K
  ``(view_k, y)`` minibatches of the one source minibatch, the views made by the
  gradient engine's view maker (``dge_augment``, ``dge_view_sampling``, ...). IRM,
  VREx, CORAL, Fishr, GroupDRO then penalise or weigh across views, Mixup mixes views,
  Fish takes one inner step per view.
* ``dge_optimizer: sgd``: every optimiser the algorithm assigns to an attribute, when
  it builds it (SagNet's three, Fish's ``optimizer_inner`` rebuilt each update, IRM's
  and VREx's new Adam at the end of their penalty anneal, ...), is replaced by SGD
  with ``dge_momentum`` over the same parameter groups, each with its ``lr`` and
  ``weight_decay`` (``optimizers.sgd_like``). Fish's inner state saved and reloaded
  each step is therefore SGD's. Optimisers DomainBed builds as SGD (Transfer's
  adversary, TRM's per-domain heads, URM's discriminator option) stay as DomainBed
  builds them. An algorithm that builds an optimiser outside an attribute
  (:data:`LOCAL_OPTIMIZERS`) refuses ``sgd``.
"""

from __future__ import annotations

import functools

import torch
from domainbed import algorithms as host

from domainbed_dge.plugin import methods
from domainbed_dge.plugin.checks import known_hparams
from domainbed_dge.plugin.hparams import VIEW_HPARAMS, HParamError
from domainbed_dge.plugin.optimizers import sgd_like
from domainbed_dge.plugin.views import keep_fixed_view_seeds, view_maker_for

#: DomainBed's algorithms that build an optimiser the plugin cannot reach (a local
#: variable, not an attribute), so they refuse ``dge_optimizer: sgd``; each with where.
#: tests/plugin/test_host_algorithms.py checks this against DomainBed's source.
LOCAL_OPTIMIZERS = {
    "MLDG": "its update builds a local Adam, inner_opt, for each meta-train split (DomainBed algorithms.py, "
            "MLDG.update)",
}


def is_domainbed_algorithm(cls) -> bool:
    """Whether ``cls`` is one of DomainBed's own algorithm classes."""
    return isinstance(cls, type) and issubclass(cls, host.Algorithm) and cls.__module__ == host.__name__


@functools.cache
def hosted(cls: type) -> type:
    """The subclass of DomainBed's algorithm ``cls`` that takes the plugin's keys, under
    ``cls``'s name (any other class is returned as it is)."""
    if not is_domainbed_algorithm(cls):
        return cls
    return type(cls.__name__, (HostedAlgorithm, cls),
                {"__doc__": cls.__doc__, "__module__": __name__, "domainbed_class": cls})


def _local_optimizer(cls: type) -> str | None:
    for base in cls.__mro__:
        if base.__module__ == host.__name__ and base.__name__ in LOCAL_OPTIMIZERS:
            return LOCAL_OPTIMIZERS[base.__name__]
    return None


def check_host_hparams(cls: type, hparams: dict, num_domains: int, channels: int | None = None) -> None:
    """Raise :class:`HParamError` when DomainBed's algorithm ``cls`` cannot run with the
    plugin's keys in ``hparams`` on ``num_domains`` training environments (and, when
    given, images of ``channels`` channels): a misspelled ``dge_`` key, a value not
    allowed, views in MDG, or SGD for an algorithm that keeps an optimiser of its own."""
    name = cls.__name__
    methods.validate(name, hparams, known=known_hparams(name))
    views = hparams.get("dge_num_views", 0)
    if views and num_domains != 1:
        raise HParamError(
            f"{name}: hyperparameter 'dge_num_views' = {views} is not allowed with {num_domains} training "
            "environments: views are the domains only in SDG, where the one source has no others "
            "(MDG trains on the environments); allowed here: 0")
    if views:
        for h in VIEW_HPARAMS:
            if h.name not in hparams:
                raise HParamError(f"{name}: hyperparameter {h.name!r} is missing; allowed: {h.allowed}")
        if hparams["dge_input_normalization"] == "imagenet" and channels not in (None, 3):
            raise HParamError(f"{name}: hyperparameter 'dge_input_normalization' = 'imagenet' is not allowed for "
                              f"{channels}-channel images (ImageNet statistics are for 3); allowed here: none")
    where = _local_optimizer(cls)
    if hparams.get("dge_optimizer") == "sgd" and where is not None:
        raise HParamError(f"{name}: hyperparameter 'dge_optimizer' = 'sgd' is not allowed: {where}, which the "
                          "plugin cannot make SGD; allowed here: adam")


class HostedAlgorithm(host.Algorithm):
    """The plugin's keys on a DomainBed algorithm; :func:`hosted` puts it first in the
    bases of that algorithm's subclass, whose ``domainbed_class`` is the algorithm."""

    domainbed_class: type

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        check_host_hparams(self.domainbed_class, hparams, num_domains, input_shape[0])
        views = hparams.get("dge_num_views", 0)
        super().__init__(input_shape, num_classes, views or num_domains, hparams)
        self.views_as_domains = views
        # train.py seeds torch with the run's --seed before it builds the algorithm.
        self.view_maker = view_maker_for(hparams, input_shape[0], run_seed=torch.initial_seed()) if views else None
        if views and hparams["dge_view_sampling"] == "fixed":
            keep_fixed_view_seeds(self)
        self._check_optimizers()

    def __setattr__(self, name, value):
        if isinstance(value, torch.optim.Optimizer) and not isinstance(value, torch.optim.SGD):
            hparams = self.__dict__.get("hparams", {})
            if hparams.get("dge_optimizer") == "sgd":
                value = sgd_like(value, hparams["dge_momentum"])
        super().__setattr__(name, value)

    def update(self, minibatches, unlabeled=None):
        if self.view_maker is not None:
            if len(minibatches) != 1:
                raise ValueError(f"views as domains expect one training minibatch (SDG), got {len(minibatches)}")
            x, y = minibatches[0]
            minibatches = [(view, y) for view in self.view_maker.views(x, self.views_as_domains)]
        results = super().update(minibatches, unlabeled)
        self._check_optimizers()
        return results

    def _check_optimizers(self) -> None:
        """Under ``dge_optimizer: sgd``, fail rather than train on with an optimiser
        the plugin did not make SGD (one held in a container, say)."""
        if self.hparams.get("dge_optimizer") != "sgd":
            return
        for attribute, value in vars(self).items():
            held = value if isinstance(value, (list, tuple)) else (value.values() if isinstance(value, dict) else [value])
            for optimizer in held:
                if isinstance(optimizer, torch.optim.Optimizer) and not isinstance(optimizer, torch.optim.SGD):
                    raise RuntimeError(f"{type(self).__name__}: {attribute} is a {type(optimizer).__name__} "
                                       "while dge_optimizer is 'sgd'")
