"""Tables of single-domain generalization (SDG) results from a DomainBed sweep.

    python -m domainbed_dge.collect_results --input_dir SWEEP_OUTPUT [--format text|markdown|latex]
        [--rows ROW ...] [--reference ROW ...]

For each dataset and each selection method (``source validation``: checkpoint and
hyperparameters chosen on the source domain's ``out`` split; ``oracle``: on the
target domains' ``out`` splits, as DomainBed's oracle; see
``domainbed_dge.experiments.selection``): one row per algorithm (or labelled
variant), one column per source domain, and an ``Avg`` column; for source-validation
selection, the selected checkpoints' accuracy on the source's validation split (what
a learning rate is chosen on); with a single source (as on Digits), each row's
accuracy on each target, ranked; each method's paired difference to ``--reference``
(default: the step-matched control ``GradAvg x K``) where that row exists and, given
two or more references, an overview that ranks the rows by average target accuracy
with their paired difference to each; each method's learning curves (source
validation accuracy and training loss at each checkpoint, mean over its selected
runs); for methods that log equilibrium weights, the mean weight,
``dge_net_vs_gradavg`` and ``dge_adjusted_pairs`` at each checkpoint; every other
number a method logs (its own diagnostics, e.g. GSAM's ``perturbation_norm``) at
each checkpoint; per method, the source x target accuracy matrix. The tables are
described in ``domainbed_dge.experiments.tables``.

Only SDG records count: those whose ``args.test_envs`` are every environment but
one. MDG results go through DomainBed's own
``python -m domainbed.scripts.collect_results --input_dir SWEEP_OUTPUT``.
Malformed or truncated lines of results.jsonl are skipped with a warning on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from domainbed_dge.experiments.records import FINISHED_ONLY_HELP, Loaded, load_runs
from domainbed_dge.experiments.tables import FORMATS, PAIRED_REFERENCE, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m domainbed_dge.collect_results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="MDG results (one test environment per job) are DomainBed's: "
               "python -m domainbed.scripts.collect_results --input_dir SWEEP_OUTPUT",
    )
    parser.add_argument("--input_dir", required=True,
                        help="a sweep's output directory, searched at any depth (required, no default)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="(default: %(default)s)")
    parser.add_argument("--latex", action="store_true", help="same as --format latex, DomainBed's flag (default: off)")
    parser.add_argument("--max_step", type=int, default=None,
                        help="ignore checkpoints after this step, as if the runs had stopped there (default: none)")
    parser.add_argument("--finished_only", action="store_true", help=FINISHED_ONLY_HELP)
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                        help="only these rows (labels as the tables print them), in the tables' usual order "
                             "(default: every row)")
    parser.add_argument("--reference", nargs="+", default=None, metavar="ROW",
                        help=f"the row(s) every method is compared with pair by pair (default: {PAIRED_REFERENCE}, "
                             "where the sweep has it); with two or more, also an overview that ranks the rows "
                             "with their paired difference to each")
    return parser


def keep_rows(loaded: Loaded, rows: Sequence[str]) -> None:
    """Leave only the runs of ``rows`` (row labels) in ``loaded``."""
    loaded.runs = [run for run in loaded.runs if run.method in set(rows)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fmt = "latex" if args.latex else args.format
    try:
        loaded = load_runs(args.input_dir, max_step=args.max_step, finished_only=args.finished_only)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not loaded.runs:
        print(f"No SDG records under {args.input_dir} ({loaded.records} records in {loaded.files} results files, "
              f"{loaded.skipped_lines} bad lines skipped).", file=sys.stderr)
        return 1
    rows = sorted({run.method for run in loaded.runs})
    if args.rows is not None:
        unknown = [row for row in args.rows if row not in rows]
        if unknown:
            parser.error(f"--rows {unknown[0]!r} is not a row of these results; allowed: {', '.join(rows)}")
        keep_rows(loaded, args.rows)
        rows = sorted(set(args.rows))
    for reference in args.reference or ():
        if reference not in rows:
            parser.error(f"--reference {reference!r} is not a row of these results; allowed: {', '.join(rows)}")
    sys.stdout.write(report(args.input_dir, loaded, fmt, args.reference or (PAIRED_REFERENCE,)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
