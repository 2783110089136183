"""``DGE_DATA_WORKERS``: how many loader processes DomainBed's train.py starts per data loader.

DomainBed's datasets ask for ``N_WORKERS = 8`` processes for each of train.py's
loaders: the training environments' and one per environment split for evaluation,
started anew at every evaluation. On a machine with a few cores those processes cost
more than they load (a 28 x 28 dataset is in memory already). With the environment
variable set to an integer N >= 0, the start-up hook sets DomainBed's
``MultipleDomainDataset.N_WORKERS`` to N (0: load in the training process). The
batches are the same either way: the samplers run in the training process.
Standard library only.
"""

from __future__ import annotations

import os

VARIABLE = "DGE_DATA_WORKERS"


def requested_workers(environ=os.environ) -> int | None:
    """The worker count ``DGE_DATA_WORKERS`` asks for, ``None`` when it is unset; a
    value that is not an integer >= 0 raises ValueError naming it."""
    value = environ.get(VARIABLE)
    if value is None or value == "":
        return None
    if not value.strip().isdigit():
        raise ValueError(f"{VARIABLE}={value!r} is not allowed; allowed: an integer >= 0 (loader processes per "
                         "data loader; unset: DomainBed's own count)")
    return int(value)


def set_data_workers(module) -> None:
    """``domainbed.datasets``: DomainBed's loader processes per loader, as ``DGE_DATA_WORKERS`` says."""
    workers = requested_workers()
    if workers is not None:
        module.MultipleDomainDataset.N_WORKERS = workers
