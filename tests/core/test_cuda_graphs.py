"""Capturing a step's passes: when a graph applies, and the bookkeeping around it (warm-up,
static input buffers, a new capture when the layout changes, the eager fallback), with
a backend that replays by re-running what was captured, as a CUDA graph replays its
kernels on the captured addresses. The real capture is tested on CUDA in
tests/plugin/test_cuda_graphs.py."""

from __future__ import annotations

import pytest
import torch

from domainbed_dge.core.cuda_graphs import CapturedPasses, cuda_graphs_apply


class Rerun:
    """Warm-up runs the passes; capture runs nothing and returns a replay that runs the
    captured passes again, on whatever tensors they were captured with."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.events: list[str] = []

    def warm_up(self, run):
        self.events.append("warm-up")
        run()

    def capture(self, run):
        self.events.append("capture")
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return run


class Passes:
    """Writes sum_k (x_k . y_k) into a buffer that outlives the call, and counts runs."""

    def __init__(self):
        self.output = torch.zeros(())
        self.runs = 0

    def __call__(self, batches):
        self.runs += 1
        self.output.copy_(sum((x * y).sum() for x, y in batches))


def batches(seed, size=4):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, generator=generator), torch.randn(size, generator=generator)) for _ in range(3)]


def expected(batch):
    return sum(float((x * y).sum()) for x, y in batch)


def test_graphs_apply_on_cuda_only_and_when_enabled():
    assert cuda_graphs_apply(True, torch.device("cuda", 0))
    assert not cuda_graphs_apply(False, torch.device("cuda", 0))
    assert not cuda_graphs_apply(True, torch.device("cpu"))


def test_warm_up_then_one_capture_then_replays_over_fresh_copies_of_the_inputs():
    backend, passes = Rerun(), Passes()
    captured = CapturedPasses(backend)
    for seed in range(4):
        batch = batches(seed)
        captured(passes, batch, key=("weights",))
        assert float(passes.output) == pytest.approx(expected(batch))
    assert backend.events == ["warm-up", "capture"]
    assert passes.runs == 4  # warm-up, then three replays (capturing runs nothing)
    assert all(not any(s is t for t in sum(batches(3), ())) for s in captured.inputs)


@pytest.mark.parametrize("change", ["key", "shape", "dtype"])
def test_a_new_layout_is_warmed_up_and_captured_again(change):
    backend, passes = Rerun(), Passes()
    captured = CapturedPasses(backend)
    for seed in range(2):
        captured(passes, batches(seed), key=("weights",))
    key, batch = ("weights",), batches(2)
    if change == "key":
        key = ("moved weights",)
    elif change == "shape":
        batch = batches(2, size=5)
    else:
        batch = [(x.double(), y.double()) for x, y in batch]
    for _ in range(2):
        captured(passes, batch, key=key)
        assert float(passes.output) == pytest.approx(expected(batch))
    assert backend.events == ["warm-up", "capture", "warm-up", "capture"]


def test_a_failed_capture_warns_and_runs_the_passes_eagerly_from_then_on():
    backend, passes = Rerun(fail=True), Passes()
    captured = CapturedPasses(backend)
    captured(passes, batches(0), key=())
    with pytest.warns(RuntimeWarning, match="capture of the per-domain passes failed.*operation not permitted"):
        captured(passes, batches(1), key=())
    assert float(passes.output) == pytest.approx(expected(batches(1)))
    captured(passes, batches(2), key=())
    assert float(passes.output) == pytest.approx(expected(batches(2)))
    assert backend.events == ["warm-up", "capture"] and passes.runs == 3
