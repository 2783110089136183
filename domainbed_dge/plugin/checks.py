"""Hyperparameter checks against DomainBed's registry, made when an algorithm is built."""

from __future__ import annotations

from domainbed import hparams_registry

from domainbed_dge.plugin import methods


def known_hparams(algorithm: str) -> set[str]:
    """The names DomainBed's registry (with this plugin's entries) defines for ``algorithm``."""
    return set(hparams_registry.default_hparams(algorithm, "RotatedMNIST")) | set(
        hparams_registry.default_hparams(algorithm, "PACS"))


def check_hparams(algorithm: str, hparams: dict) -> None:
    """Raise :class:`~domainbed_dge.plugin.hparams.HParamError` naming the first key of
    ``hparams`` that ``algorithm`` does not know, or whose value it cannot use."""
    methods.validate(algorithm, hparams, known=known_hparams(algorithm))
