"""Per-step time and peak memory of DGE, its peers and ERM, and of ``equilibrate`` alone.

    python -m domainbed_dge.benchmark --model resnet50 --batch 32 --views 3 --image-size 224

Every method is the real DomainBed algorithm class (``ERM`` from DomainBed; ``DGE``,
``GradAvg``, ``AgrSum``, ``AgrRand``, ``PCGrad`` from ``domainbed_dge.algorithms``;
``LoopDGE``, the per-parameter reference, from ``domainbed_dge.reference``) built
with DomainBed's default PACS hyperparameters. All of them get the same K minibatches
of B images, standing for the K views of one source batch: ERM concatenates them into
one forward and backward pass, the gradient engines take one pass per view (domains
given explicitly, so no augmentation is timed inside a step; the RandAugment cost of
making K views is timed on its own row).

DomainBed's ResNet featurizer asks torchvision for ImageNet weights, which cannot be
downloaded here; while the algorithms are constructed, ``torchvision.models.resnet18``
and ``resnet50`` are replaced by their randomly initialised versions (``weights=None``).
The rest of DomainBed's featurizer (dropped ``fc``, dropout, BatchNorm handling) is
unchanged. It is built for 224 x 224 inputs (DomainBed picks the ResNet by input
shape) and, being fully convolutional, takes any ``--image-size``. Algorithms are
built directly on ``--device``.

Timing: median over ``--steps`` steps after ``--warmup`` steps, each bracketed by
``torch.cuda.synchronize`` on CUDA; the methods' steps (and the parts of the
equilibrate benchmark) are interleaved, one of each per round, so that a shared
machine's changing load hits all of them alike.
Peak memory (``torch.cuda.max_memory_allocated`` over one step after the warm-up) and
host-device synchronisations per step (counted with ``torch.cuda.set_sync_debug_mode``)
are measured on CUDA with each method alone on the device; neither has a per-step
equivalent on the CPU, where both are reported as null.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Iterator
from unittest import mock

import torch

from domainbed_dge.equilibrium import equilibrate, equilibrium_mixing
from domainbed_dge.gram import GradientGram, gram_statistics

ENGINE_METHODS = ("DGE", "GradAvg", "AgrSum", "AgrRand", "PCGrad")
METHODS = ("ERM", *ENGINE_METHODS, "LoopDGE")
#: The dataset whose default hyperparameters (and number of classes) are used.
DATASET = "PACS"
NUM_CLASSES = 7
#: DomainBed builds its ResNet featurizer only for this input shape.
FEATURIZER_INPUT_SHAPE = (3, 224, 224)
MEBI = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("resnet18", "resnet50"), default="resnet50")
    parser.add_argument("--batch", type=int, default=32, help="images per view (B)")
    parser.add_argument("--views", type=int, default=3, help="views, i.e. domains (K)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast the forward passes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS),
        help="ERM is always measured: ratios are against it",
    )
    parser.add_argument(
        "--params", type=int, default=None,
        help="P of the equilibrate-alone matrix (default: the model's parameter count)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if min(args.batch, args.image_size, args.steps) < 1 or args.views < 2 or args.warmup < 0:
        parser.error("need --batch, --image-size, --steps >= 1, --views >= 2 and --warmup >= 0")
    if "ERM" not in args.methods:
        args.methods.insert(0, "ERM")  # every ratio is against ERM
    return args


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
    """DomainBed's default PACS hyperparameters, with the torchvision ResNet asked for."""
    from domainbed import hparams_registry

    hparams = hparams_registry.default_hparams("DGE" if method == "LoopDGE" else method, DATASET)
    hparams.update(resnet18=model == "resnet18", resnet50_augmix=False)
    return hparams


def algorithm_class(method: str):
    from domainbed import algorithms

    if method == "LoopDGE":
        from domainbed_dge.reference import LoopDGE

        return LoopDGE
    return algorithms.get_algorithm_class(method)


def construct(method: str, args: argparse.Namespace, device: str) -> torch.nn.Module:
    """``method`` for ``args.views`` explicit domains, seeded, built directly on
    ``device`` (no host copy of ResNet-50 to move)."""
    torch.manual_seed(0)
    with random_init_resnets(), torch.device(device):
        return algorithm_class(method)(FEATURIZER_INPUT_SHAPE, NUM_CLASSES, args.views, hparams_for(method, args.model))


def build(method: str, args: argparse.Namespace) -> torch.nn.Module:
    """``method`` on ``args.device``, with the bf16 forward when asked for."""
    algorithm = construct(method, args, args.device)
    if args.dtype == "bf16":
        algorithm.predict = bf16_forward(algorithm.network, args.device)
    return algorithm


def bf16_forward(network: torch.nn.Module, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` with the forward pass under bfloat16 autocast and float32 logits
    (the loss, backward pass, gradient matrix and optimizer stay outside autocast)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = network(x)
        return logits.float()

    return predict


def minibatches(args: argparse.Namespace) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """K minibatches of B ImageNet-normalised-like images and labels."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.image_size, args.image_size)
    return [
        (
            torch.randn(shape, generator=generator).to(args.device),
            torch.randint(0, NUM_CLASSES, (args.batch,), generator=generator).to(args.device),
        )
        for _ in range(args.views)
    ]


# --- Measuring -----------------------------------------------------------------------


def synchronize(device: str) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def warm_up(step: Callable[[], object], args: argparse.Namespace) -> None:
    for _ in range(args.warmup):
        step()
    synchronize(args.device)


def time_call(step: Callable[[], object], device: str) -> float:
    """Milliseconds of one call of ``step``, the device's queue drained on both sides."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def summary(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times), "times_ms": times}


def measure_interleaved(steps: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, dict]:
    """Time each of ``steps`` ``args.steps`` times after ``args.warmup`` untimed calls,
    in interleaved rounds (one call of each per round), so that a change in the
    machine's load during the run hits all of them alike."""
    for step in steps.values():
        warm_up(step, args)
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(time_call(step, args.device))
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


def memory_and_syncs(method: str, batches, args: argparse.Namespace) -> dict:
    """``method`` alone on the GPU: peak allocated memory over one step after the
    warm-up, and the host-device synchronisations of one step."""
    step = functools.partial(build(method, args).update, batches)
    warm_up(step, args)
    torch.cuda.reset_peak_memory_stats()
    time_call(step, args.device)
    return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "syncs_per_step": count_syncs(step)}


def measure_methods(batches, args: argparse.Namespace) -> dict:
    """Per-step times of every method's ``update`` on ``batches``, interleaved; on
    CUDA, first each method's memory and synchronisations, measured alone."""
    results = {method: {"peak_memory_bytes": None, "syncs_per_step": None} for method in args.methods}
    if args.device == "cuda":
        for method in args.methods:
            results[method].update(memory_and_syncs(method, batches, args))
            release_memory(args.device)
    steps = {method: functools.partial(build(method, args).update, batches) for method in args.methods}
    for method, timing in measure_interleaved(steps, args).items():
        results[method].update(timing)
    return results


def measure_views(batches, args: argparse.Namespace) -> dict:
    """RandAugment (DGE's default augmentation) making K views of one B-image batch."""
    from domainbed_dge.views import view_maker_for

    view_maker = view_maker_for(hparams_for("DGE", args.model), FEATURIZER_INPUT_SHAPE[0], run_seed=0)
    x = batches[0][0]
    return measure_interleaved({"views": lambda: view_maker.views(x, args.views)}, args)["views"]


def parameter_sizes(args: argparse.Namespace) -> list[int]:
    """Sizes of the model's trainable parameters, in order."""
    return [p.numel() for p in construct("ERM", args, "meta").parameters() if p.requires_grad]


def layout(sizes: list[int], total: int) -> list[int]:
    """``sizes`` repeated and cut so that they add up to ``total``."""
    pieces, covered = [], 0
    for size in itertools.cycle(sizes):
        if covered == total:
            return pieces
        pieces.append(min(size, total - covered))
        covered += pieces[-1]


def measure_equilibrate(sizes: list[int], args: argparse.Namespace) -> dict:
    """``equilibrate`` on a random K x P float32 matrix, its parts, the per-parameter
    reference on the same matrix, and its memory traffic against a copy's bandwidth.

    Bytes moved, counting compulsory traffic only: the Gram pass reads G (K P 4 bytes)
    and the combine ``M @ G`` reads G and writes the directions (2 K P 4 bytes), so
    3 K P 4 bytes. The floor is that at the bandwidth of ``copy_`` between two K x P
    buffers (2 K P 4 bytes per copy) measured on the same device. ``sizes`` are the
    model's parameter sizes: the default P and the per-parameter pieces of the
    reference.
    """
    from domainbed_dge.reference import reference_equilibrate

    P = args.params or sum(sizes)
    K = args.views
    G = torch.randn(K, P, generator=torch.Generator().manual_seed(0)).to(args.device)
    weights = torch.ones(K, device=args.device)
    options = dict(alpha=0.5, weight_lr=0.1, weight_steps=1)
    gram = GradientGram.of(G)
    host_weights = weights.cpu()
    mixing = equilibrium_mixing(gram, host_weights, **options).mixing.to(args.device, G.dtype)
    pieces = [list(row.split(layout(sizes, P))) for row in G]
    target = torch.empty_like(G)
    parts = {
        "equilibrate": lambda: equilibrate(G, weights, **options),
        "gram_statistics": lambda: gram_statistics(G),
        "host_mixing": lambda: equilibrium_mixing(gram, host_weights, **options),
        "combine": lambda: mixing @ G,
        "loop_reference": lambda: reference_equilibrate(pieces, [1.0] * K, **options),
        "copy": lambda: target.copy_(G),
    }
    times = measure_interleaved(parts, args)
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
        "syncs_per_call": count_syncs(parts["equilibrate"]) if args.device == "cuda" else None,
    }


# --- Reporting -----------------------------------------------------------------------


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


def _cell(value, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def methods_table(report: dict) -> str:
    rows = [
        "| method | step (ms) | vs ERM | vs DGE | peak memory (MiB) | syncs/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["methods"].items():
        memory = None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / MEBI
        rows.append(
            f"| {name} | {r['median_ms']:.1f} | {r['ratio_vs_erm']:.2f}x | {_cell(r['ratio_vs_dge'], '.2f', 'x')} "
            f"| {_cell(memory, '.0f')} | {_cell(r['syncs_per_step'], 'd')} |"
        )
    views, erm = report["views"]["median_ms"], report["methods"]["ERM"]
    label = f"RandAugment, {report['settings']['views']} views"
    rows.append(f"| {label} | {views:.1f} | {views / erm['median_ms']:.2f}x | | | |")
    if erm["peak_memory_bytes"] is not None:
        budget = 1.1 * erm["peak_memory_bytes"] + report["gradient_matrix_bytes"]
        rows += ["", f"memory budget (ERM peak + 10 % + K P 4 bytes): {budget / MEBI:.0f} MiB"]
    return "\n".join(rows)


def equilibrate_table(report: dict) -> str:
    e = report["equilibrate"]
    rows = [f"K = {e['K']}, P = {e['P']:,} ({e['parameter_pieces']} parameter pieces for the loop reference)", ""]
    rows += ["| part | median (ms) |", "|---|---:|"]
    rows += [f"| {name} | {t['median_ms']:.3f} |" for name, t in e["parts"].items()]
    rows += [
        "",
        f"bytes moved {e['bytes_moved'] / MEBI:.1f} MiB; copy bandwidth {e['copy_bandwidth_gbs']:.1f} GB/s; "
        f"floor {e['floor_ms']:.3f} ms; effective bandwidth {e['effective_bandwidth_gbs']:.1f} GB/s; "
        f"{e['ratio_to_floor']:.2f}x the floor; syncs per call {_cell(e['syncs_per_call'], 'd')}",
    ]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict:
    if args.device == "cuda":
        # As DomainBed's train.py sets them.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    load_before = os.getloadavg()
    batches = minibatches(args)
    methods = measure_methods(batches, args)
    add_ratios(methods)
    release_memory(args.device)
    views = measure_views(batches, args)
    sizes = parameter_sizes(args)
    equilibrium = measure_equilibrate(sizes, args)
    return {
        "device": describe_device(args.device),
        "torch": torch.__version__,
        "settings": {key: value for key, value in vars(args).items() if key != "json"},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "model_parameters": sum(sizes),
        "gradient_matrix_bytes": args.views * sum(sizes) * 4,
        "methods": methods,
        "views": views,
        "equilibrate": equilibrium,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    s = report["settings"]
    load = report["load_average"]
    print(f"{report['device']}; torch {report['torch']}; "
          f"load average {load['before'][0]:.2f} -> {load['after'][0]:.2f}")
    print(f"{s['model']}, B = {s['batch']} per view, K = {s['views']}, {s['image_size']} px, {s['dtype']}, "
          f"median of {s['steps']} steps after {s['warmup']}")
    print()
    print(methods_table(report))
    print()
    print(equilibrate_table(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
