"""Per-step time and peak memory of DGE, its peers and ERM, and of ``equilibrate`` alone.

    python -m domainbed_dge.benchmark --model resnet50 --batch 32 --views 3 --image-size 224

Prints two markdown tables (the methods' median step times with their ratios to ERM
and DGE, peak memory and synchronisations; the parts of ``equilibrate`` against the
memory-bandwidth floor) to standard output, and with ``--json FILE`` writes every
measurement to FILE. It writes nothing else: ``reports/performance.md`` quotes runs
of this command. What is measured, and how, is described in
``domainbed_dge.experiments.timing``.

With ``--profile DIR`` it times nothing: it runs ``torch.profiler`` on one step of each
method (by default ERM and GradAvg) after the warm-up, prints the summary and writes it
to DIR/profile.json and DIR/profile.md (``domainbed_dge.experiments.profiling``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from domainbed_dge.plugin.host import require_domainbed

require_domainbed()

from domainbed_dge.experiments import profiling  # noqa: E402
from domainbed_dge.experiments.timing import ALLOWED, METHODS, VARIANTS, Settings, run  # noqa: E402

MEBI = 2**20


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("resnet18", "resnet50"), default=defaults.model,
                        help="DomainBed's ResNet featurizer (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="images per view, B (default: %(default)s)")
    parser.add_argument("--views", type=int, default=defaults.views, help="views, i.e. domains, K (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="pixels (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=defaults.dtype,
                        help="bf16: autocast the forward passes (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda when available, else cpu (here: %(default)s)")
    variants = "; ".join(f"{name}: {variant.summary}" for name, variant in VARIANTS.items())
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help=f"some of {', '.join(ALLOWED)} ({variants}); ERM is always measured, ratios are "
                             f"against it (default: {', '.join(METHODS)}; with --profile: "
                             f"{', '.join(profiling.PROFILED)})")
    parser.add_argument("--params", type=int, default=None,
                        help="P of the equilibrate-alone matrix (default: the model's parameter count)")
    parser.add_argument("--json", default=None, help="also write every measurement to this file (default: none)")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="instead of timing, profile one step of each method after the warm-up and write "
                             "DIR/profile.json and DIR/profile.md (default: none)")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(Settings)}
    options["methods"] = tuple(options["methods"] or (profiling.PROFILED if args.profile else METHODS))
    try:
        return Settings(**options), args
    except ValueError as error:
        parser.error(str(error))


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


def write_profile(settings: Settings, directory: str, argv: list[str]) -> None:
    report = profiling.profile(settings)
    command = "python -m domainbed_dge.benchmark " + shlex.join(argv)
    summary = profiling.markdown(report, command)
    print(summary)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.md").write_text(summary)
    with open(folder / "profile.json", "w") as handle:
        json.dump({"command": command, "settings": dataclasses.asdict(settings), "methods": report}, handle, indent=2)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    settings, args = parse_args(argv)
    if args.profile:
        write_profile(settings, args.profile, argv)
        return
    json_path = args.json
    report = run(settings)
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
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
