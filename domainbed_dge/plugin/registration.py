"""Patches applied to DomainBed's modules right after they load (see ``_startup``).

Each function takes the freshly executed DomainBed module and adds this plugin to it;
each is idempotent and leaves everything else in the module as it was.
"""

from __future__ import annotations

import functools
import importlib
import sys


def register_algorithms(module) -> None:
    """``domainbed.algorithms``: add our algorithms to it.

    When ``domainbed_dge.plugin.algorithms`` is itself being imported (it imports DomainBed's
    module first), it registers them as its last statement instead.
    """
    plugin = sys.modules.get("domainbed_dge.plugin.algorithms")
    if plugin is not None and not hasattr(plugin, "register"):
        return
    importlib.import_module("domainbed_dge.plugin.algorithms").register(module)


#: The plugin's datasets -> the DomainBed dataset whose hyperparameters they take.
#: OfflineDigits is a 28 x 28 dataset: DomainBed's small-image defaults and draws.
HOST_HPARAMS_AS = {"OfflineDigits": "RotatedMNIST"}


def register_hparams(module) -> None:
    """``domainbed.hparams_registry``: wrap ``_hparams`` so that our algorithms get their
    entries, and DomainBed's the plugin's keys (views as domains and the optimiser, off
    by default and never switched on by a random draw, see ``methods.hparams_of``), each
    name drawn from its own seeded RandomState as DomainBed's are; the plugin's datasets
    get DomainBed's entries of the dataset :data:`HOST_HPARAMS_AS` names."""
    if getattr(module._hparams, "__wrapped_by_domainbed_dge__", False):
        return
    import numpy as np
    from domainbed.lib import misc

    from domainbed_dge.plugin.methods import define

    host_hparams = module._hparams

    @functools.wraps(host_hparams)
    def _hparams(algorithm, dataset, random_seed):
        entries = host_hparams(algorithm, HOST_HPARAMS_AS.get(dataset, dataset), random_seed)
        entries.update(
            define(algorithm, dataset, lambda name: np.random.RandomState(misc.seed_hash(random_seed, name)))
        )
        return entries

    _hparams.__wrapped_by_domainbed_dge__ = True
    module._hparams = _hparams


def register_launchers(module) -> None:
    """``domainbed.command_launchers``: add the ``submitit`` launcher to ``REGISTRY``
    (submitit itself is imported only when a sweep uses it)."""
    importlib.import_module("domainbed_dge.plugin.launchers").register(module)


def patch_datasets(module) -> None:
    """``domainbed.datasets``: add OfflineDigits, remember which environment each split
    comes from, refuse a data folder without MNIST before torchvision tries to download
    it, and start as many loader processes as ``DGE_DATA_WORKERS`` says."""
    importlib.import_module("domainbed_dge.plugin.digits").register(module)
    importlib.import_module("domainbed_dge.plugin.loader_guard").remember_environments(module)
    importlib.import_module("domainbed_dge.plugin.data_guard").guard_mnist(module)
    importlib.import_module("domainbed_dge.plugin.data_workers").set_data_workers(module)


def guard_infinite_loader(module) -> None:
    """``domainbed.lib.fast_data_loader``: refuse a batch larger than its split."""
    importlib.import_module("domainbed_dge.plugin.loader_guard").guard_infinite_loader(module)


#: DomainBed module -> the function that patches it.
PATCHES = {
    "domainbed.algorithms": register_algorithms,
    "domainbed.hparams_registry": register_hparams,
    "domainbed.command_launchers": register_launchers,
    "domainbed.datasets": patch_datasets,
    "domainbed.lib.fast_data_loader": guard_infinite_loader,
}
