"""A step's per-domain forward and backward passes, replayed from one captured CUDA graph.

A gradient-engine step runs K forward and backward passes of B images. Each pass
dispatches hundreds of small kernels (about 570 per ResNet-50 pass, 480 of the step's
1,700 being the ``.grad`` accumulations into G's rows; ``../shared/PERFORMANCE.md``
section 3b), and on an H200 the step behaves as if about 34 ms of each pass did not
depend on the batch: host dispatch rather than GPU work (``reports/performance.md``).
Captured once with ``torch.cuda.graph`` (PyTorch's "CUDA Graphs" notes, whole-network
capture), the K passes are launched together by one ``replay``.

The semantics do not move, because replay runs the captured kernels on the captured
addresses: the same convolutions and BatchNorm calls, one domain at a time, so
BatchNorm normalises each domain with its own statistics and updates the running
statistics K times in sequence, and the gradients accumulate into the same rows of G.
For that to hold, everything the passes read or write must keep its storage: the
inputs are copied into static buffers (the copies, and the views, are made outside the
graph), and a change of the caller's ``key`` (say, parameters moved by ``Module.to``)
or of the inputs' shapes starts over with an eager warm-up and a new capture. Nothing
in the passes may synchronise with the host.
"""

from __future__ import annotations

import warnings
from typing import Callable, Protocol, Sequence

import torch

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def cuda_graphs_apply(enabled: bool, device: torch.device) -> bool:
    """Whether a step on ``device`` replays its passes from a graph: on CUDA, when enabled.
    On the CPU there is nothing to capture, and the passes run as they always have."""
    return enabled and device.type == "cuda"


class GraphBackend(Protocol):
    """How passes are warmed up and captured (:class:`CudaGraphs` on a GPU)."""

    def warm_up(self, run: Callable[[], None]) -> None: ...

    def capture(self, run: Callable[[], None]) -> Callable[[], None]: ...


class CudaGraphs:
    """``torch.cuda.graph`` capture, warmed up on the capture's own side stream as
    PyTorch's notes prescribe (libraries allocate their workspaces there lazily)."""

    def __init__(self):
        self._stream: torch.cuda.Stream | None = None

    @property
    def stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def warm_up(self, run: Callable[[], None]) -> None:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            run()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, run: Callable[[], None]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            run()
        return graph.replay


class CapturedPasses:
    """Runs a step's ``passes(batches)``: eagerly as a warm-up the first time a layout
    is seen, then captured over static copies of the inputs, then replayed.

    ``passes`` must write everything the step reads afterwards into tensors that keep
    their storage (G's rows, a losses buffer) and return nothing. ``key`` names the
    storage the passes touch besides the inputs (parameters, buffers, outputs) and
    anything else that changes the captured kernels (train or eval mode); with the
    inputs' shapes, dtypes and devices it is the layout. If capturing fails, a warning
    says so and every later step runs the passes eagerly.
    """

    def __init__(self, backend: GraphBackend | None = None):
        self.backend = backend if backend is not None else CudaGraphs()
        self.layout: tuple | None = None
        self.inputs: list[torch.Tensor] | None = None
        self.replay: Callable[[], None] | None = None
        self.failure: Exception | None = None

    def __call__(self, passes: Callable[[Batches], None], batches: Batches, key: tuple) -> None:
        if self.failure is not None:
            passes(batches)
            return
        flat = [tensor for pair in batches for tensor in pair]
        layout = (key, tuple((t.shape, t.dtype, t.device) for t in flat))
        if layout != self.layout:
            self.layout, self.inputs, self.replay = layout, None, None
            self.backend.warm_up(lambda: passes(batches))
            return
        if self.replay is None:
            self.inputs = [t.clone() for t in flat]
            static = list(zip(self.inputs[0::2], self.inputs[1::2]))
            try:
                self.replay = self.backend.capture(lambda: passes(static))
            except Exception as error:  # capture records, it does not run: the step is still to do
                self.failure = error
                warnings.warn(f"CUDA graph capture of the per-domain passes failed ({type(error).__name__}: "
                              f"{error}); running them eagerly from now on", RuntimeWarning, stacklevel=2)
                passes(batches)
                return
        else:
            for static, tensor in zip(self.inputs, flat):
                static.copy_(tensor)
        self.replay()
