"""``torch.profiler`` on one step of each method, after the benchmark's warm-up: is the
step bound by the host's dispatch or by the device's kernels?

For each method, one step of its ``update`` on the benchmark's K minibatches, built
as the timing harness builds it (:func:`~domainbed_dge.experiments.timing.build`):

- **wall time**: the step with the device's queue drained on both sides, under the
  profiler (whose instrumentation adds host time: the benchmark's timings are without it);
- **device busy time**: the summed self time of the device's kernels, memory copies
  and sets (the profiler table's "Self CUDA time total"; 0 on the CPU). Wall time far
  above it means the device waited for the host;
- **host time in ops**: the summed CPU time of the top-level operators (dispatch and
  CPU-side work, autograd's backward thread included), and the number of those
  operators and of device kernels;
- **host time per pass**: the CPU time of the forward and backward passes divided by
  their number: ``update`` for ERM and the other one-batch methods (one pass, its
  optimizer step included), the engine's per-domain passes (K passes) when they run
  eagerly. A replayed CUDA graph runs no passes on the host: then it is the replay's;
- the operators with the most host time and the kernels with the most device time.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import torch
from torch.autograd import DeviceType

from domainbed_dge.experiments.timing import Settings, build, engine_of, minibatches, synchronize, warm_up

#: Profiled by default: the issue's pair, one 96-image pass against K 32-image passes.
PROFILED = ("ERM", "GradAvg")
PASSES_LABEL = "forward-backward passes"
DEVICE_TYPES = (DeviceType.CUDA,)
TOP = 15


def labelled(function: Callable, label: str) -> Callable:
    """``function`` inside a ``torch.profiler.record_function`` range named ``label``."""

    def run(*args, **kwargs):
        with torch.profiler.record_function(label):
            return function(*args, **kwargs)

    return run


def passes_of(algorithm: torch.nn.Module, settings: Settings) -> int:
    """Forward and backward passes in one step: K for the gradient engine, else one."""
    return settings.views if hasattr(algorithm, "_backward_passes") else 1


def label_passes(algorithm: torch.nn.Module) -> None:
    """Mark the step's passes for the profiler: the engine's per-domain passes (eager,
    or the graph replay that stands for them), else the whole ``update``."""
    if hasattr(algorithm, "_backward_passes"):
        algorithm._backward_passes = labelled(algorithm._backward_passes, PASSES_LABEL)
        if getattr(algorithm, "_captured", None) is not None:
            algorithm._captured = labelled(algorithm._captured, PASSES_LABEL)
    else:
        algorithm.update = labelled(algorithm.update, PASSES_LABEL)


def profile_method(method: str, batches, settings: Settings) -> dict:
    """One profiled step of ``method`` after ``settings.warmup`` unprofiled ones."""
    algorithm = build(method, settings)
    label_passes(algorithm)
    step = functools.partial(algorithm.update, batches)
    warm_up(step, settings)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if settings.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        synchronize(settings.device)
        start = time.perf_counter()
        step()
        synchronize(settings.device)
        wall_ms = 1e3 * (time.perf_counter() - start)
    return summarise(profiler, wall_ms, passes_of(algorithm, settings)) | {"engine": engine_of(method)}


def summarise(profiler: torch.profiler.profile, wall_ms: float, passes: int) -> dict:
    """The numbers of the module's docstring from a finished profile."""
    averages = profiler.key_averages()
    device_rows = [row for row in averages if row.device_type in DEVICE_TYPES and not is_annotation(row)]
    host_rows = [row for row in averages if row.device_type == DeviceType.CPU and not is_annotation(row)]
    top_level = [event for event in profiler.events() if event.device_type == DeviceType.CPU and is_top_level(event)]
    labelled_ranges = [row for row in averages if row.key == PASSES_LABEL and row.device_type == DeviceType.CPU]
    passes_ms = labelled_ranges[0].cpu_time_total / 1e3 if labelled_ranges else None
    device_ms = sum(row.self_device_time_total for row in device_rows) / 1e3
    return {
        "wall_ms": wall_ms,
        "device_busy_ms": device_ms,
        "device_busy_fraction": device_ms / wall_ms,
        "host_ops_ms": sum(event.cpu_time_total for event in top_level) / 1e3,
        "host_ops": len(top_level),
        "device_kernels": sum(row.count for row in device_rows),
        "passes": passes,
        "host_ms_per_pass": None if passes_ms is None else passes_ms / passes,
        "top_host_ops": [
            {"name": row.key, "calls": row.count, "self_host_ms": row.self_cpu_time_total / 1e3}
            for row in sorted(host_rows, key=lambda row: -row.self_cpu_time_total)[:TOP]
        ],
        "top_device_kernels": [
            {"name": row.key, "calls": row.count, "device_ms": row.self_device_time_total / 1e3}
            for row in sorted(device_rows, key=lambda row: -row.self_device_time_total)[:TOP]
        ],
    }


def is_annotation(event) -> bool:
    """A ``record_function`` range rather than an operator or a kernel."""
    return bool(getattr(event, "is_user_annotation", False))


def is_top_level(event) -> bool:
    """An operator called by no other operator (ranges around it do not count)."""
    if is_annotation(event):
        return False
    parent = event.cpu_parent
    while parent is not None and is_annotation(parent):
        parent = parent.cpu_parent
    return parent is None


def profile(settings: Settings) -> dict:
    """One profiled step of each of ``settings.methods`` on the same K minibatches."""
    if settings.device == "cuda":
        # As DomainBed's train.py sets them.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    batches = minibatches(settings)
    return {method: profile_method(method, batches, settings) for method in settings.methods}


def markdown(report: dict, command: str) -> str:
    """The profile as markdown: one summary table, then each method's top rows."""

    def ms(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = [f"`{command}`", "",
             "| method | engine | wall (ms) | device busy (ms) | busy / wall | host in ops (ms) | top-level ops "
             "| kernels | passes | host per pass (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, r in report.items():
        lines.append(f"| {method} | {r['engine']} | {ms(r['wall_ms'])} | {ms(r['device_busy_ms'])} "
                     f"| {r['device_busy_fraction']:.2f} | {ms(r['host_ops_ms'])} | {r['host_ops']} "
                     f"| {r['device_kernels']} | {r['passes']} | {ms(r['host_ms_per_pass'])} |")
    for method, r in report.items():
        lines += ["", f"### {method}: operators by host time", "", "| operator | calls | self host (ms) |",
                  "|---|---:|---:|"]
        lines += [f"| `{row['name']}` | {row['calls']} | {row['self_host_ms']:.2f} |" for row in r["top_host_ops"]]
        if r["top_device_kernels"]:
            lines += ["", f"### {method}: kernels by device time", "", "| kernel | calls | device (ms) |",
                      "|---|---:|---:|"]
            lines += [f"| `{row['name'][:120]}` | {row['calls']} | {row['device_ms']:.2f} |"
                      for row in r["top_device_kernels"]]
    return "\n".join(lines) + "\n"
