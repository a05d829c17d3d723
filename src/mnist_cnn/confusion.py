"""The confusion matrix as a figure (Blues, integer counts, as in the chapter) and as CSV/PNG files."""

import csv
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torchmetrics.utilities.plot import plot_confusion_matrix

from mnist_cnn.files import atomic_path


def confusion_figure(matrix: torch.Tensor, title: str = "") -> Figure:
    """Draw a square count matrix (rows: true class, columns: predicted class).

    A bare `Figure`, not pyplot: no GUI backend is needed, and nothing is left open in pyplot's registry.
    """
    fig = Figure(figsize=(8, 8))
    ax = fig.subplots()
    labels = [str(i) for i in range(matrix.shape[0])]
    plot_confusion_matrix(matrix.long().cpu(), ax=ax, add_text=True, labels=labels, cmap="Blues")
    ax.set_title(title)
    return fig


def save_confusion_matrix(matrix: torch.Tensor, directory: Path, stem: str = "test_confusion_matrix") -> list[Path]:
    """Write `<stem>.csv` (header row and column of class indices) and `<stem>.png`; return both paths."""
    csv_path, png_path = directory / f"{stem}.csv", directory / f"{stem}.png"
    counts = matrix.long().cpu().tolist()
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true\\predicted", *range(len(counts))])
        writer.writerows([label, *row] for label, row in enumerate(counts))
    fig = confusion_figure(matrix, title=stem.replace("_", " "))
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return [csv_path, png_path]
