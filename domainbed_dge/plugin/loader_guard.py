"""One clear error instead of a silent hang when a batch exceeds a training split.

DomainBed's ``InfiniteDataLoader`` samples ``len(split)`` indices per pass and drops
the last incomplete batch; with ``batch_size`` larger than the split (and no class
weights) it never yields a batch and train.py spins forever. The start-up hook
guards every DomainBed run, whatever the algorithm: DomainBed's datasets remember
which environment each split came from (:func:`remember_environments`), and the
loader refuses a batch it can never fill (:func:`guard_infinite_loader`), naming
the dataset, the environment, its sizes and the batch size.
"""

from __future__ import annotations

import functools
import weakref

#: environment dataset -> (dataset name, environment index, environment name)
_ENVIRONMENTS: "weakref.WeakKeyDictionary[object, tuple[str, int, str]]" = weakref.WeakKeyDictionary()


class BatchLargerThanSplit(ValueError):
    """``batch_size`` exceeds the examples of a training split."""


def remember_environments(module) -> None:
    """``domainbed.datasets``: record each environment handed out by a dataset."""
    base = module.MultipleDomainDataset
    if getattr(base.__getitem__, "__remembers_environments__", False):
        return
    getitem = base.__getitem__

    @functools.wraps(getitem)
    def __getitem__(self, index):
        environment = getitem(self, index)
        names = type(self).ENVIRONMENTS or []
        name = names[index] if isinstance(index, int) and -len(names) <= index < len(names) else str(index)
        try:
            _ENVIRONMENTS[environment] = (type(self).__name__, index, str(name))
        except TypeError:  # not weak-referenceable: the error names no environment
            pass
        return environment

    __getitem__.__remembers_environments__ = True
    base.__getitem__ = __getitem__


def describe_split(split) -> str:
    """``"RotatedMNIST environment 2 ('30', 833 examples)"`` for a train.py split of a
    remembered environment, else ``"a training split"``."""
    environment = getattr(split, "underlying_dataset", split)
    known = _ENVIRONMENTS.get(environment) if _is_weakrefable(environment) else None
    if known is None:
        return "a training split"
    dataset, index, name = known
    return f"{dataset} environment {index} ({name!r}, {len(environment)} examples)"


def _is_weakrefable(value) -> bool:
    try:
        weakref.ref(value)
    except TypeError:
        return False
    return True


def guard_infinite_loader(module) -> None:
    """``domainbed.lib.fast_data_loader``: make ``InfiniteDataLoader`` refuse a batch it
    can never fill (unweighted sampling of ``len(dataset)`` indices, last batch dropped)."""
    loader = module.InfiniteDataLoader
    if getattr(loader.__init__, "__guarded__", False):
        return
    init = loader.__init__

    @functools.wraps(init)
    def __init__(self, dataset, weights, batch_size, num_workers):
        if weights is None and batch_size > len(dataset):
            raise BatchLargerThanSplit(
                f"batch_size {batch_size} exceeds the {len(dataset)} training examples of {describe_split(dataset)}: "
                f"DomainBed's InfiniteDataLoader would never yield a batch. Use a batch_size of at most {len(dataset)}."
            )
        init(self, dataset, weights, batch_size, num_workers)

    __init__.__guarded__ = True
    loader.__init__ = __init__
