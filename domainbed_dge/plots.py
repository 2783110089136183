"""Figures of single-domain generalization (SDG) results from a DomainBed sweep.

    python -m domainbed_dge.plots --input_dir SWEEP_OUTPUT --output_dir FIGURES

Writes per dataset its accuracy figure and a forest plot of the paired differences to
``--reference`` rows and, per source domain, its training curves and diagnostics as
PNG files (described in ``domainbed_dge.experiments.figures``), and prints each file
it wrote.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from domainbed_dge.experiments.figures import FOREST_REFERENCES, write_figures
from domainbed_dge.experiments.records import FINISHED_ONLY_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", required=True,
                        help="a sweep's output directory, searched at any depth (required, no default)")
    parser.add_argument("--output_dir", required=True,
                        help="where the PNG files go, created if needed (required, no default)")
    parser.add_argument("--finished_only", action="store_true", help=FINISHED_ONLY_HELP)
    parser.add_argument("--reference", nargs="+", default=list(FOREST_REFERENCES), metavar="ROW",
                        help="the forest plot's reference rows, by their labels in the tables; those the sweep "
                             f"lacks are left out (default: {' '.join(FOREST_REFERENCES)})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input_dir):
        parser.error(f"--input_dir {args.input_dir} is not a directory")
    written = write_figures(args.input_dir, args.output_dir, finished_only=args.finished_only,
                            references=args.reference)
    if not written:
        print(f"No SDG records under {args.input_dir}: no figures written.", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
