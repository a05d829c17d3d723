"""How the test accuracy holds up when the test images are rotated or mirrored: what augmentation buys.

Each test batch is also classified rotated by -45 to 45 degrees in 5-degree steps and flipped horizontally,
with the training augmentation's own transform (`mnist_cnn.augment.flip_rotate`: nearest-neighbour, black
fill). The counts are summed on every process and synced; rank 0 writes `robustness.csv`
(`transform,parameter,accuracy`) and `robustness.png` into the run folder and logs the figure.
"""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from matplotlib.figure import Figure
from torchmetrics import SumMetric

from mnist_cnn.augment import flip_rotate
from mnist_cnn.callbacks import tensorboard_writers
from mnist_cnn.images import PIXEL_MEAN, PIXEL_STD
from mnist_cnn.insight import render, save_png
from mnist_cnn.tables import write_csv

ROTATIONS = tuple(range(-45, 50, 5))  # degrees, counter-clockwise; 0 is the plain test
TRANSFORMS = [("rotation", angle) for angle in ROTATIONS] + [("horizontal_flip", 1)]
COLUMNS = ["transform", "parameter", "accuracy"]


def transformed(images: torch.Tensor, transform: str, parameter: int) -> torch.Tensor:
    """Normalised images rotated by `parameter` degrees, or mirrored left to right."""
    pixels = images * PIXEL_STD + PIXEL_MEAN  # the black background must stay black: transform the pixels
    count = len(images)
    angles = torch.full((count,), float(parameter if transform == "rotation" else 0))
    flips = torch.full((count,), transform == "horizontal_flip")
    return (flip_rotate(pixels, angles, flips) - PIXEL_MEAN) / PIXEL_STD


class RobustnessCheck(L.Callback):
    """Test accuracy under each of `TRANSFORMS`, from the test loop's own batches; `output_dir` gets the files."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self._correct: list[SumMetric] = []
        self._seen: SumMetric | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._correct = [SumMetric().to(pl_module.device) for _ in TRANSFORMS]
        self._seen = SumMetric().to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, labels = batch
        self._seen.update(torch.tensor(float(len(labels)), device=pl_module.device))
        for correct, (transform, parameter) in zip(self._correct, TRANSFORMS, strict=True):
            predicted = pl_module(transformed(images, transform, parameter)).argmax(dim=1)
            correct.update((predicted == labels).sum().float())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seen = float(self._seen.compute())  # compute() syncs: every process calls it
        accuracies = [float(correct.compute()) / seen if seen else float("nan") for correct in self._correct]
        if not trainer.is_global_zero:
            return
        rows = [
            {"transform": transform, "parameter": parameter, "accuracy": accuracy}
            for (transform, parameter), accuracy in zip(TRANSFORMS, accuracies, strict=True)
        ]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        shown = [{**row, "accuracy": f"{row['accuracy']:.4f}"} for row in rows]
        write_csv(shown, COLUMNS, self.output_dir / "robustness.csv")
        pixels = render(robustness_figure(rows))
        save_png(pixels, self.output_dir / "robustness.png")
        for writer in tensorboard_writers(trainer):
            writer.add_image("test/robustness", pixels, trainer.current_epoch, dataformats="HWC")


def robustness_figure(rows: list[dict[str, Any]]) -> Figure:
    """Accuracy against the rotation angle, with the mirrored test images' accuracy as a dashed line."""
    rotations = [row for row in rows if row["transform"] == "rotation"]
    (flip,) = [row["accuracy"] for row in rows if row["transform"] == "horizontal_flip"]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([row["parameter"] for row in rotations], [row["accuracy"] for row in rotations], "o-", label="rotated")
    ax.axhline(flip, linestyle="--", color="tab:red", label=f"mirrored left-right: {flip:.2%}")
    ax.set(xlabel="rotation of the test images (degrees, counter-clockwise)", ylabel="test accuracy", ylim=(0, 1))
    ax.set_xticks(list(ROTATIONS[::3]))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center")
    ax.set_title("Test accuracy under rotations and flips")
    return fig
