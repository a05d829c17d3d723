"""The confusion matrix as a figure (Blues, integer counts, as in the chapter) and as CSV/PNG files."""

import csv
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from matplotlib.figure import Figure
from torchmetrics.utilities.plot import plot_confusion_matrix

from mnist_cnn.callbacks import tensorboard_writers
from mnist_cnn.files import atomic_path
from mnist_cnn.metrics import class_names_of


def confusion_figure(matrix: torch.Tensor, title: str = "", names: Sequence[str] | None = None) -> Figure:
    """Draw a square count matrix (rows: true class, columns: predicted class).

    A bare `Figure`, not pyplot: no GUI backend is needed, and nothing is left open in pyplot's registry.
    """
    fig = Figure(figsize=(8, 8))
    ax = fig.subplots()
    labels = list(names) if names else [str(i) for i in range(matrix.shape[0])]
    plot_confusion_matrix(matrix.long().cpu(), ax=ax, add_text=True, labels=labels, cmap="Blues")
    ax.set_title(title)
    return fig


def save_confusion_matrix(
    matrix: torch.Tensor, directory: Path, names: Sequence[str], stem: str = "test_confusion_matrix"
) -> list[Path]:
    """Write `<stem>.csv` (header row and column of class names) and `<stem>.png`; return both paths."""
    csv_path, png_path = directory / f"{stem}.csv", directory / f"{stem}.png"
    counts = matrix.long().cpu().tolist()
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true\\predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, counts, strict=True))
    fig = confusion_figure(matrix, title=stem.replace("_", " "), names=names)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return [csv_path, png_path]


class ConfusionFigures(L.Callback):
    """Draw the module's validation (every epoch) and test confusion matrices into every TensorBoard logger.

    Rank 0 only (the counts are already synced); other loggers cannot hold images.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._draw(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")

    @staticmethod
    def _draw(trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        writers = tensorboard_writers(trainer)
        counts = getattr(pl_module, "confusion_counts", {}).get(stage)
        if not writers or counts is None or not trainer.is_global_zero:
            return
        tag = f"{stage}/confusion_matrix"
        fig = confusion_figure(counts, f"{tag} (epoch {trainer.current_epoch})", class_names_of(trainer.datamodule))
        for writer in writers:
            writer.add_figure(tag, fig, global_step=trainer.current_epoch, close=False)
