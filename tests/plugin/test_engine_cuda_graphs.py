"""``dge_cuda_graphs``: the engine's K passes replayed from one captured graph give the
eager step's gradients, losses, parameters and BatchNorm statistics. On the CPU, with
a backend that replays by re-running the captured passes, this checks the engine's
side: the passes write only into storage that outlives them, read the inputs from the
static copies, and are captured again when the parameters move to new storage. On
CUDA it checks the real capture."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.domainbed

INPUT_SHAPE = (3, 28, 28)
NUM_CLASSES = 4


class Rerun:
    """As tests/core/test_cuda_graphs.py's: capture runs nothing; replay re-runs the passes."""

    def __init__(self):
        self.events = []

    def warm_up(self, run):
        self.events.append("warm-up")
        run()

    def capture(self, run):
        self.events.append("capture")
        return run


def make(name, num_domains, dataset="Debug28", input_shape=INPUT_SHAPE, **overrides):
    from domainbed import algorithms, hparams_registry

    hparams = hparams_registry.default_hparams(name, dataset)
    hparams.update({"dge_optimizer": "sgd", "dge_momentum": 0.9, "lr": 0.05, **overrides})
    torch.manual_seed(0)
    return algorithms.get_algorithm_class(name)(input_shape, NUM_CLASSES, num_domains, hparams)


def minibatches(seed, count=3, batch=6, shape=INPUT_SHAPE, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, *shape, generator=generator).to(device),
         torch.randint(0, NUM_CLASSES, (batch,), generator=generator).to(device))
        for _ in range(count)
    ]


def state(algorithm):
    return {
        "G": algorithm._gradients.matrix.clone(),
        "losses": algorithm._gradients.losses.clone(),
        **{name: t.detach().clone() for name, t in algorithm.state_dict().items()},
    }


def assert_same_state(captured, eager, **tolerance):
    left, right = state(captured), state(eager)
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], msg=name, **tolerance)


def test_the_hparam_is_a_no_op_on_the_cpu():
    assert make("DGE", 3).hparams["dge_cuda_graphs"] is False  # off until the CUDA tests pass on a device
    algorithm = make("DGE", 3, dge_cuda_graphs=True)
    algorithm.update(minibatches(0))
    algorithm.update(minibatches(1))
    assert algorithm._captured.layout is None  # never warmed up, captured or replayed
    assert make("DGE", 3)._captured is None


@pytest.mark.parametrize("name", ["DGE", "GradAvg"])
def test_replayed_passes_give_the_eager_step(name, monkeypatch):
    from domainbed_dge.plugin import algorithms

    monkeypatch.setattr(algorithms, "cuda_graphs_apply", lambda enabled, device: enabled)
    captured, eager = make(name, 3, dge_cuda_graphs=True), make(name, 3)
    captured._captured.backend = backend = Rerun()
    for seed in range(4):
        batches = minibatches(seed)
        assert captured.update(batches) == eager.update(batches)
        assert_same_state(captured, eager, rtol=0, atol=0)
    assert backend.events == ["warm-up", "capture"]


def test_parameters_in_new_storage_are_captured_again(monkeypatch):
    """``Module.to(device)`` gives every parameter new storage: a graph captured on the
    old addresses would train a stale copy, so the passes are warmed up and captured anew."""
    from domainbed_dge.plugin import algorithms

    monkeypatch.setattr(algorithms, "cuda_graphs_apply", lambda enabled, device: enabled)
    captured, eager = make("DGE", 3, dge_cuda_graphs=True), make("DGE", 3)
    captured._captured.backend = backend = Rerun()
    for seed in range(4):
        if seed == 2:
            for parameter in captured.network.parameters():
                parameter.data = parameter.data.clone()
        assert captured.update(minibatches(seed)) == eager.update(minibatches(seed))
    assert_same_state(captured, eager, rtol=0, atol=0)
    assert backend.events == ["warm-up", "capture", "warm-up", "capture"]


@pytest.mark.cuda
@pytest.mark.parametrize("num_domains", [3, 1], ids=["mdg", "sdg"])
def test_captured_cuda_step_gives_the_eager_step_with_batchnorm(num_domains):
    """ResNet-18 (BatchNorm in train mode) at 32 px: per-domain statistics, running
    statistics updated K times a step, gradients in G's rows, as the eager step."""
    from domainbed_dge.experiments.timing import FEATURIZER_INPUT_SHAPE, random_init_resnets

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with random_init_resnets():
        captured, eager = (
            make("DGE", num_domains, "PACS", FEATURIZER_INPUT_SHAPE, resnet18=True, resnet50_augmix=False,
                 dge_cuda_graphs=graphs).cuda()
            for graphs in (True, False)
        )
    for seed in range(4):
        batches = minibatches(seed, count=num_domains, batch=8, shape=(3, 32, 32), device="cuda")
        torch.manual_seed(seed)  # the same views in SDG
        captured_results = captured.update(batches)
        torch.manual_seed(seed)
        eager_results = eager.update(batches)
        assert captured_results.keys() == eager_results.keys()
        for key in captured_results:
            assert captured_results[key] == pytest.approx(eager_results[key], rel=1e-4, abs=1e-6), key
        assert_same_state(captured, eager, rtol=1e-4, atol=1e-6)
    assert captured._captured.replay is not None and captured._captured.failure is None
    assert any("running_mean" in name for name in captured.state_dict())
