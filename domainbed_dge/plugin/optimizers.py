"""The comparison's optimiser: one rule, ``dge_optimizer`` and ``dge_momentum``, for every row.

Adam (``adam``) is DomainBed's choice for every algorithm; SGD with momentum (``sgd``)
is the paper's. The learning rate and weight decay are DomainBed's ``lr`` and
``weight_decay``.
"""

from __future__ import annotations

import torch


def make_optimizer(parameters, hparams: dict) -> torch.optim.Optimizer:
    """The optimiser ``hparams`` names, over ``parameters``."""
    if hparams["dge_optimizer"] == "sgd":
        return torch.optim.SGD(
            parameters, lr=hparams["lr"], momentum=hparams["dge_momentum"], weight_decay=hparams["weight_decay"]
        )
    return torch.optim.Adam(parameters, lr=hparams["lr"], weight_decay=hparams["weight_decay"])


def sgd_like(optimizer: torch.optim.Optimizer, momentum: float) -> torch.optim.SGD:
    """SGD with ``momentum`` over ``optimizer``'s parameter groups, each keeping its
    ``lr`` and ``weight_decay``: how an optimiser a DomainBed algorithm builds (Adam)
    becomes the comparison's SGD. Fresh state, as a newly built optimiser has."""
    groups = [{"params": group["params"], "lr": group["lr"], "weight_decay": group.get("weight_decay", 0.0)}
              for group in optimizer.param_groups]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum)
