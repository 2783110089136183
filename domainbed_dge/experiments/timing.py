"""The timing harness behind ``python -m domainbed_dge.benchmark``: per-step time and peak
memory of DGE, its peers and ERM, and of ``equilibrate`` alone, from plain settings.

Every method is the real DomainBed algorithm class (``ERM`` from DomainBed; every
entry of the registry ``plugin.methods``, from ``domainbed_dge.plugin.algorithms``, so
that a new entry is timed without a change here; and the :data:`VARIANTS`, among them
:class:`LoopDGE`, DGE with the per-parameter reference of ``core.reference``) built
with DomainBed's default PACS hyperparameters. All of them get the same K minibatches
of B images, standing for the K views of one source batch, as K training
environments: ERM, and every registry method whose engine is not the gradient engine,
concatenates them into one batch of K·B images; the gradient engines take one pass
per view (domains given explicitly, so no augmentation is timed inside a step; the
RandAugment cost of making K views is timed on its own).

DomainBed's ResNet featurizer asks torchvision for ImageNet weights, which cannot be
downloaded here; while the algorithms are constructed, ``torchvision.models.resnet18``
and ``resnet50`` are replaced by their randomly initialised versions (``weights=None``).
The rest of DomainBed's featurizer (dropped ``fc``, dropout, BatchNorm handling) is
unchanged. It is built for 224 x 224 inputs (DomainBed picks the ResNet by input
shape) and, being fully convolutional, takes any ``image_size``. Algorithms are
built directly on the device.

Timing: median over ``steps`` steps after ``warmup`` steps, each bracketed by
``torch.cuda.synchronize`` on CUDA; the methods' steps (and the parts of the
equilibrate benchmark) are interleaved, one of each per round, so that a shared
machine's changing load hits all of them alike.
Peak memory (``torch.cuda.max_memory_allocated`` over one step after the warm-up) and
host-device synchronisations per step (counted with ``torch.cuda.set_sync_debug_mode``)
are measured on CUDA with each method alone on the device; neither has a per-step
equivalent on the CPU, where both are reported as null.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import itertools
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

from domainbed_dge.core.equilibrium import equilibrate, equilibrium_mixing
from domainbed_dge.core.gram import GradientGram, chunked_gram_statistics, gram_statistics
from domainbed_dge.core.reference import reference_equilibrate
from domainbed_dge.plugin.algorithms import DGE
from domainbed_dge.plugin.views import view_maker_for
from domainbed_dge.plugin.methods import METHODS as REGISTERED, equilibrium_options, suggestion

REGISTRY_METHODS = tuple(method.name for method in REGISTERED)
ENGINES = {method.name: method.engine for method in REGISTERED}
#: Timed by default: ERM, every registry entry, and the naive reference (:data:`VARIANTS`
#: holds the variants that can be asked for besides).
METHODS = ("ERM", *REGISTRY_METHODS, "LoopDGE")
#: The dataset whose default hyperparameters (and number of classes) are used.
DATASET = "PACS"
NUM_CLASSES = 7
#: DomainBed builds its ResNet featurizer only for this input shape.
FEATURIZER_INPUT_SHAPE = (3, 224, 224)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one benchmark run measures (the command's options, with their defaults)."""

    model: str = "resnet50"
    batch: int = 32
    views: int = 3
    image_size: int = 224
    steps: int = 20
    warmup: int = 5
    dtype: str = "fp32"
    device: str = "cpu"
    methods: tuple[str, ...] = METHODS
    params: int | None = None

    def __post_init__(self):
        if self.model not in ("resnet18", "resnet50"):
            raise ValueError(f"model {self.model!r} is not allowed; allowed: resnet18, resnet50")
        for name, minimum in (("batch", 1), ("image_size", 1), ("steps", 1), ("views", 2), ("warmup", 0)):
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} = {getattr(self, name)} is not allowed; allowed: an integer >= {minimum}")
        if self.params is not None and self.params < 1:
            raise ValueError(f"params = {self.params} is not allowed; allowed: an integer >= 1, or unset for the "
                             "model's parameter count")
        unknown = [method for method in self.methods if method not in ALLOWED]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}{suggestion(unknown[0], ALLOWED)} "
                             f"Allowed: {', '.join(ALLOWED)}")
        if "ERM" not in self.methods:
            object.__setattr__(self, "methods", ("ERM", *self.methods))  # every ratio is against ERM


class AutogradRowsDGE(DGE):
    """DGE whose passes take each domain's gradient with ``torch.autograd.grad`` and
    write it into its row of G with one ``torch.cat``, instead of accumulating it
    parameter by parameter into ``.grad`` views of the row: about 480 fewer kernels in a
    ResNet-50 step (``../shared/PERFORMANCE.md`` section 3b), the same numbers. Slower
    on the CPU (ibid., 3c), so a benchmark variant until a GPU measures it."""

    def _backward_passes(self, domains) -> None:
        gradients = self._gradients
        for row, (x, y) in enumerate(domains):
            loss = F.cross_entropy(self.predict(x), y)
            gradients.losses[row].copy_(loss.detach())
            pieces = torch.autograd.grad(loss, self.trainable)
            torch.cat([piece.reshape(-1) for piece in pieces], out=gradients.matrix[row])


class LoopDGE(DGE):
    """DGE with the engine replaced by per-domain ``torch.autograd.grad`` calls and
    :func:`~domainbed_dge.core.reference.reference_equilibrate`; network, optimizer,
    views, hyperparameters and the ``equilibrium_weights`` state are DGE's own."""

    def update(self, minibatches, unlabeled=None):
        gradients, losses = [], []
        for x, y in self.domains(minibatches):
            loss = F.cross_entropy(self.predict(x), y)
            gradients.append(list(torch.autograd.grad(loss, self.trainable)))
            losses.append(loss.item())
        persistent = self.hparams["dge_weights"] == "persistent"
        start = self.equilibrium_weights.tolist() if persistent else [1.0] * len(gradients)
        directions, weights, adjusted = reference_equilibrate(gradients, start, **equilibrium_options(self.hparams))
        if self.hparams["dge_update"] == "mean":
            directions = [[sum(pieces) / len(directions) for pieces in zip(*directions)]]
        for direction in directions:
            for parameter, piece in zip(self.trainable, direction):
                parameter.grad = piece
            self.optimizer.step()
        self.equilibrium_weights.copy_(torch.tensor(weights, dtype=torch.float64))
        results = {"loss": sum(losses) / len(losses), "dge_adjusted_pairs": float(adjusted)}
        results.update({f"dge_weight_{k}": w for k, w in enumerate(weights)})
        return results


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method timed beside the registry's: ``base``'s default hyperparameters with
    ``hparams`` on top, built as ``cls`` (``base``'s registered class when None)."""

    base: str
    summary: str
    cls: type | None = None
    hparams: dict = dataclasses.field(default_factory=dict)


VARIANTS = {
    "LoopDGE": Variant("DGE", "DGE with per-parameter loops (the naive reference)", LoopDGE),
    "DGE-graphs": Variant("DGE", "DGE with dge_cuda_graphs on (the K passes replayed from one captured graph)",
                          hparams={"dge_cuda_graphs": True}),
    "GradAvg-graphs": Variant("GradAvg", "GradAvg with dge_cuda_graphs on", hparams={"dge_cuda_graphs": True}),
    "DGE-autograd": Variant("DGE", "DGE whose rows are written by autograd.grad and one torch.cat",
                            AutogradRowsDGE),
    "DGE-autograd-graphs": Variant("DGE", "DGE-autograd with dge_cuda_graphs on", AutogradRowsDGE,
                                   {"dge_cuda_graphs": True}),
}
ALLOWED = (*METHODS, *(name for name in VARIANTS if name not in METHODS))


def engine_of(method: str) -> str:
    """How ``method`` trains: its registry engine, ``DomainBed`` for ERM, or the
    variant's base's engine."""
    if method in VARIANTS:
        return ENGINES[VARIANTS[method].base]
    return ENGINES.get(method, "DomainBed")


# --- Building the algorithms -------------------------------------------------------


@contextlib.contextmanager
def random_init_resnets() -> Iterator[None]:
    """Make DomainBed's ``torchvision.models.resnet18/50(pretrained=True)`` build the
    randomly initialised networks (``weights=None``) instead of downloading weights."""
    import torchvision

    def random_init(build):
        return lambda pretrained=False, **kwargs: build(weights=None, **kwargs)

    resnet18, resnet50 = torchvision.models.resnet18, torchvision.models.resnet50
    with mock.patch.object(torchvision.models, "resnet18", random_init(resnet18)), mock.patch.object(
        torchvision.models, "resnet50", random_init(resnet50)
    ):
        yield


def hparams_for(method: str, model: str) -> dict:
    """DomainBed's default PACS hyperparameters (a variant's: its base's, with its
    own on top), with the torchvision ResNet asked for."""
    from domainbed import hparams_registry

    variant = VARIANTS.get(method)
    hparams = hparams_registry.default_hparams(variant.base if variant else method, DATASET)
    hparams.update(variant.hparams if variant else {})
    hparams.update(resnet18=model == "resnet18", resnet50_augmix=False)
    return hparams


def algorithm_class(method: str):
    from domainbed import algorithms

    variant = VARIANTS.get(method)
    if variant is not None:
        return variant.cls or algorithms.get_algorithm_class(variant.base)
    return algorithms.get_algorithm_class(method)


def construct(method: str, settings: Settings, device: str) -> torch.nn.Module:
    """``method`` for ``settings.views`` explicit domains, seeded, built directly on
    ``device`` (no host copy of ResNet-50 to move)."""
    torch.manual_seed(0)
    with random_init_resnets(), torch.device(device):
        return algorithm_class(method)(FEATURIZER_INPUT_SHAPE, NUM_CLASSES, settings.views, hparams_for(method, settings.model))


def build(method: str, settings: Settings) -> torch.nn.Module:
    """``method`` on ``settings.device``, with the bf16 forward when asked for."""
    algorithm = construct(method, settings, settings.device)
    if settings.dtype == "bf16":
        algorithm.predict = bf16_forward(algorithm.network, settings.device)
    return algorithm


def bf16_forward(network: torch.nn.Module, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` with the forward pass under bfloat16 autocast and float32 logits
    (the loss, backward pass, gradient matrix and optimizer stay outside autocast)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        # No cast cache: it is what PyTorch's notes ask of autocast inside a captured CUDA
        # graph, and each weight is cast once per forward pass anyway.
        with torch.autocast(device_type=device, dtype=torch.bfloat16, cache_enabled=False):
            logits = network(x)
        return logits.float()

    return predict


def minibatches(settings: Settings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """K minibatches of B ImageNet-normalised-like images and labels."""
    generator = torch.Generator().manual_seed(0)
    shape = (settings.batch, 3, settings.image_size, settings.image_size)
    return [
        (
            torch.randn(shape, generator=generator).to(settings.device),
            torch.randint(0, NUM_CLASSES, (settings.batch,), generator=generator).to(settings.device),
        )
        for _ in range(settings.views)
    ]


# --- Measuring -----------------------------------------------------------------------


def synchronize(device: str) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def warm_up(step: Callable[[], object], settings: Settings) -> None:
    for _ in range(settings.warmup):
        step()
    synchronize(settings.device)


def time_call(step: Callable[[], object], device: str) -> float:
    """Milliseconds of one call of ``step``, the device's queue drained on both sides."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def summary(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times), "times_ms": times}


def measure_interleaved(steps: dict[str, Callable[[], object]], settings: Settings) -> dict[str, dict]:
    """Time each of ``steps`` ``settings.steps`` times after ``settings.warmup`` untimed calls,
    in interleaved rounds (one call of each per round), so that a change in the
    machine's load during the run hits all of them alike."""
    for step in steps.values():
        warm_up(step, settings)
    times = {name: [] for name in steps}
    for _ in range(settings.steps):
        for name, step in steps.items():
            times[name].append(time_call(step, settings.device))
    return {name: summary(series) for name, series in times.items()}


def count_syncs(step: Callable[[], object]) -> int:
    """Host-device synchronisations in one call of ``step`` (CUDA only)."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing" in str(w.message) for w in caught)


def release_memory(device: str) -> None:
    """Free what the last measurement left (so that the next peak is its own)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def memory_and_syncs(method: str, batches, settings: Settings) -> dict:
    """``method`` alone on the GPU: peak allocated memory over one step after the
    warm-up, and the host-device synchronisations of one step."""
    step = functools.partial(build(method, settings).update, batches)
    warm_up(step, settings)
    torch.cuda.reset_peak_memory_stats()
    time_call(step, settings.device)
    return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "syncs_per_step": count_syncs(step)}


def measure_methods(batches, settings: Settings) -> dict:
    """Per-step times of every method's ``update`` on ``batches``, interleaved; on
    CUDA, first each method's memory and synchronisations, measured alone."""
    results = {method: {"engine": engine_of(method), "peak_memory_bytes": None, "syncs_per_step": None}
               for method in settings.methods}
    if settings.device == "cuda":
        for method in settings.methods:
            results[method].update(memory_and_syncs(method, batches, settings))
            release_memory(settings.device)
    steps = {method: functools.partial(build(method, settings).update, batches) for method in settings.methods}
    for method, timing in measure_interleaved(steps, settings).items():
        results[method].update(timing)
    return results


def measure_views(batches, settings: Settings) -> dict:
    """RandAugment (DGE's default augmentation) making K views of one B-image batch."""
    view_maker = view_maker_for(hparams_for("DGE", settings.model), FEATURIZER_INPUT_SHAPE[0], run_seed=0)
    x = batches[0][0]
    return measure_interleaved({"views": lambda: view_maker.views(x, settings.views)}, settings)["views"]


def parameter_sizes(settings: Settings) -> list[int]:
    """Sizes of the model's trainable parameters, in order."""
    return [p.numel() for p in construct("ERM", settings, "meta").parameters() if p.requires_grad]


def layout(sizes: list[int], total: int) -> list[int]:
    """``sizes`` repeated and cut so that they add up to ``total``."""
    pieces, covered = [], 0
    for size in itertools.cycle(sizes):
        if covered == total:
            return pieces
        pieces.append(min(size, total - covered))
        covered += pieces[-1]


def measure_equilibrate(sizes: list[int], settings: Settings) -> dict:
    """``equilibrate`` on a random K x P float32 matrix, its parts, the per-parameter
    reference on the same matrix, and its memory traffic against a copy's bandwidth.
    The Gram pass is timed twice: as ``gram_statistics`` runs it on the device (the
    compiled fused pass on CUDA) and as the eager chunked pass (the CPU's, and CUDA's
    before the fused pass).

    Bytes moved, counting compulsory traffic only: the Gram pass reads G (K P 4 bytes)
    and the combine ``M @ G`` reads G and writes the directions (2 K P 4 bytes), so
    3 K P 4 bytes. The floor is that at the bandwidth of ``copy_`` between two K x P
    buffers (2 K P 4 bytes per copy) measured on the same device. ``sizes`` are the
    model's parameter sizes: the default P and the per-parameter pieces of the
    reference.
    """
    P = settings.params or sum(sizes)
    K = settings.views
    G = torch.randn(K, P, generator=torch.Generator().manual_seed(0)).to(settings.device)
    weights = torch.ones(K, device=settings.device)
    options = dict(alpha=0.5, weight_lr=0.1, weight_steps=1)
    gram = GradientGram.of(G)
    host_weights = weights.cpu()
    mixing = equilibrium_mixing(gram, host_weights, **options).mixing.to(settings.device, G.dtype)
    pieces = [list(row.split(layout(sizes, P))) for row in G]
    target = torch.empty_like(G)
    parts = {
        "equilibrate": lambda: equilibrate(G, weights, **options),
        "gram_statistics": lambda: gram_statistics(G),
        "gram_statistics_eager": lambda: chunked_gram_statistics(G),
        "host_mixing": lambda: equilibrium_mixing(gram, host_weights, **options),
        "combine": lambda: mixing @ G,
        "loop_reference": lambda: reference_equilibrate(pieces, [1.0] * K, **options),
        "copy": lambda: target.copy_(G),
    }
    times = measure_interleaved(parts, settings)
    bytes_moved = 3 * K * P * G.element_size()
    copy_bandwidth = 2 * K * P * G.element_size() / (times["copy"]["median_ms"] / 1e3)
    floor_ms = 1e3 * bytes_moved / copy_bandwidth
    median_ms = times["equilibrate"]["median_ms"]
    return {
        "K": K,
        "P": P,
        "parameter_pieces": len(pieces[0]),
        "parts": times,
        "bytes_moved": bytes_moved,
        "copy_bandwidth_gbs": copy_bandwidth / 1e9,
        "floor_ms": floor_ms,
        "effective_bandwidth_gbs": bytes_moved / (median_ms / 1e3) / 1e9,
        "ratio_to_floor": median_ms / floor_ms,
        "syncs_per_call": count_syncs(parts["equilibrate"]) if settings.device == "cuda" else None,
    }




def describe_device(device: str) -> str:
    """The GPU's name, or the CPU's model with its core and thread counts."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    return f"CPU: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def add_ratios(methods: dict) -> None:
    """Each method's median step time over ERM's and (when measured) over DGE's."""
    erm = methods["ERM"]["median_ms"]
    dge = methods.get("DGE", {}).get("median_ms")
    for result in methods.values():
        result["ratio_vs_erm"] = result["median_ms"] / erm
        result["ratio_vs_dge"] = result["median_ms"] / dge if dge else None


def run(settings: Settings) -> dict:
    if settings.device == "cuda":
        # As DomainBed's train.py sets them.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    load_before = os.getloadavg()
    batches = minibatches(settings)
    methods = measure_methods(batches, settings)
    add_ratios(methods)
    release_memory(settings.device)
    views = measure_views(batches, settings)
    sizes = parameter_sizes(settings)
    equilibrium = measure_equilibrate(sizes, settings)
    return {
        "device": describe_device(settings.device),
        "torch": torch.__version__,
        "settings": dataclasses.asdict(settings),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "model_parameters": sum(sizes),
        "gradient_matrix_bytes": settings.views * sum(sizes) * 4,
        "methods": methods,
        "views": views,
        "equilibrate": equilibrium,
    }
