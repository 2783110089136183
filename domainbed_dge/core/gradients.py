"""Per-domain gradients written straight into the rows of one K x P matrix.

While domain k's backward pass runs, every trainable parameter's ``.grad`` is a view
into row k of ``G``, so autograd accumulates into the row: no per-parameter copies,
no retained graphs. For an optimizer step the ``.grad``s are pointed at a P-vector
holding the direction to apply. The step's K losses are kept beside the matrix, so
that a step's passes write everything they produce into storage that outlives them
(what a captured CUDA graph needs, ``core.cuda_graphs``).
"""

from __future__ import annotations

import torch


class GradientMatrix:
    """A K x P gradient buffer for ``parameters`` (allocated on their device)."""

    def __init__(self, parameters: list[torch.nn.Parameter], num_domains: int):
        self.parameters = parameters
        first = parameters[0]
        sizes = [p.numel() for p in parameters]
        self.matrix = torch.zeros(num_domains, sum(sizes), device=first.device, dtype=first.dtype)
        self.direction = torch.zeros(sum(sizes), device=first.device, dtype=first.dtype)
        self.losses = torch.zeros(num_domains, device=first.device, dtype=first.dtype)
        self._row_views = [self._views_into(row, sizes) for row in self.matrix]
        self._direction_views = self._views_into(self.direction, sizes)

    def _views_into(self, flat: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        return [chunk.view_as(p) for chunk, p in zip(flat.split(sizes), self.parameters)]

    def fits(self, parameters: list[torch.nn.Parameter], num_domains: int) -> bool:
        return (
            self.matrix.shape[0] == num_domains
            and self.matrix.device == parameters[0].device
            and self.matrix.dtype == parameters[0].dtype
        )

    def backward_into_row(self, row: int, loss: torch.Tensor) -> None:
        """Write ``d loss / d parameters`` into row ``row`` of the matrix, and the loss
        into ``losses[row]``."""
        self.matrix[row].zero_()
        self.losses[row].copy_(loss.detach())
        self._point_grads_at(self._row_views[row])
        loss.backward()

    def set_direction(self, direction: torch.Tensor) -> None:
        """Make ``direction`` (a P-vector) the parameters' gradient."""
        self.direction.copy_(direction)
        self._point_grads_at(self._direction_views)

    def set_combination(self, coefficients: torch.Tensor) -> None:
        """Make ``coefficients @ G`` (a K-vector of weights) the parameters' gradient."""
        torch.mm(coefficients.view(1, -1), self.matrix, out=self.direction.view(1, -1))
        self._point_grads_at(self._direction_views)

    def _point_grads_at(self, views: list[torch.Tensor]) -> None:
        for parameter, view in zip(self.parameters, views):
            parameter.grad = view
