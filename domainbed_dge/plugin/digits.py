"""OfflineDigits: the Digits benchmark of single-domain generalization, built offline.

MNIST is the source; MNIST-M, SYN and OptDigits (standing in for USPS) are the targets,
the style shifts of Digits (Ganin and Lempitsky 2015; Volpi et al. 2018). Every image is
3 x 28 x 28 in [0, 1], so DomainBed picks its MNIST_CNN. The files are written by
``python -m domainbed_dge.offline_data`` (``domainbed_dge.data``); this module reads
them. The start-up hook adds the class to DomainBed's ``datasets`` (:func:`register`),
so train.py, sweep and collect_results take ``--dataset OfflineDigits``.
"""

from __future__ import annotations

import numpy as np
import torch
from domainbed import datasets
from torch.utils.data import TensorDataset

from domainbed_dge.plugin.data_guard import DIGITS_ENVIRONMENTS, check_digits, digits_files

NAME = "OfflineDigits"


class OfflineDigits(datasets.MultipleDomainDataset):
    """MNIST, MNIST-M, SYN and OptDigits (a USPS stand-in) as DomainBed environments."""

    ENVIRONMENTS = list(DIGITS_ENVIRONMENTS)
    INPUT_SHAPE = (3, 28, 28)

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        if root is None:
            raise ValueError("Data directory not specified!")
        check_digits(root)
        self.datasets = [self._environment(root, name) for name in self.ENVIRONMENTS]
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = 10

    @staticmethod
    def _environment(root: str, name: str) -> TensorDataset:
        images_file, labels_file = digits_files(root, name)
        images = torch.from_numpy(np.load(images_file)).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.from_numpy(np.load(labels_file).astype(np.int64))
        return TensorDataset(images, labels)


def register(module) -> None:
    """``domainbed.datasets``: make ``OfflineDigits`` one of its datasets (its name in
    ``DATASETS`` and the class in the module, where train.py and sweep look it up)."""
    setattr(module, NAME, OfflineDigits)
    if NAME not in module.DATASETS:
        module.DATASETS.append(NAME)
