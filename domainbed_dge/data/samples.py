"""A picture of OfflineDigits: one row per environment, one sample of each class."""

from __future__ import annotations

import numpy as np


def sample_grid(environments: dict[str, tuple[np.ndarray, np.ndarray]], path: str, per_class: int = 2) -> None:
    """Write a PNG: a row per environment, ``per_class`` images of each digit 0-9 (the
    first of each class in file order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 10 * per_class
    figure = Figure(figsize=(columns * 0.55, len(environments) * 0.7))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(environments), columns, squeeze=False)
    for row, (name, (images, labels)) in enumerate(environments.items()):
        picks = [index for digit in range(10) for index in np.flatnonzero(labels == digit)[:per_class]]
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(picks):
                axis.imshow(images[picks[column]], interpolation="nearest")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    figure.subplots_adjust(left=0.09, right=0.995, top=0.99, bottom=0.01, wspace=0.05, hspace=0.08)
    figure.savefig(path, dpi=110)
