"""Pictures of a test in TensorBoard: the most confident mistakes, PR curves, the penultimate layer's embedding
and a reliability diagram; the mistakes and the diagram also as PNG files in the run folder.

The test's outputs are gathered from every process (torchmetrics' `CatMetric` syncs them); rank 0 draws.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import CatMetric

from mnist_cnn.callbacks import tensorboard_writers
from mnist_cnn.files import atomic_path
from mnist_cnn.images import PIXEL_MEAN, PIXEL_STD
from mnist_cnn.metrics import CALIBRATION_BINS, class_names_of

GATHERED = ("probabilities", "labels", "mistake_images")  # mistake images in the order of the test's own
EMBEDDED = ("features", "embedded_images", "embedded_labels", "embedded_probabilities")


class InsightPictures(L.Callback):
    """At the end of a test: `test/mistakes`, `test/pr_curve/<class>`, the `test/penultimate` embedding
    (TensorBoard's PROJECTOR tab) and `test/reliability_diagram`.

    `mistakes`: how many of the most confident mistakes to show (0: none); `embeddings`: how many test images
    (the first ones) to embed (0: none); `pr_curves`, `reliability`: on or off; `output_dir`: where
    `test_mistakes.png` and `test_reliability.png` go (None: TensorBoard only).
    """

    def __init__(
        self,
        mistakes: int = 64,
        pr_curves: bool = True,
        embeddings: int = 2000,
        reliability: bool = True,
        output_dir: str | None = None,
    ) -> None:
        self.mistakes, self.pr_curves, self.embeddings = mistakes, pr_curves, embeddings
        self.reliability, self.output_dir = reliability, output_dir
        self._store: dict[str, CatMetric] = {}
        self._embedded = 0
        self._features: torch.Tensor | None = None
        self._hook: Any = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._store = {name: CatMetric().to(pl_module.device) for name in (*GATHERED, *EMBEDDED)}
        self._embedded = 0
        if self.embeddings:
            self._hook = penultimate_layer(pl_module.net).register_forward_hook(self._keep_features)

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._features = None

    def _keep_features(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        # The batch's first forward pass is the test step's; other callbacks' passes (robustness) come later.
        if self._features is None:
            self._features = inputs[0].detach().flatten(1)

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
        probabilities = outputs["probabilities"].detach()
        wrong = probabilities.argmax(dim=1) != labels
        batch_values = {
            "probabilities": probabilities,
            "labels": labels,
            "mistake_images": images[wrong],
        }
        take = min(self.embeddings - self._embedded, len(labels))
        if take > 0 and self._features is not None:
            batch_values |= {
                "features": self._features[:take],
                "embedded_images": images[:take],
                "embedded_labels": labels[:take],
                "embedded_probabilities": probabilities[:take],
            }
            self._embedded += take
        for name, value in batch_values.items():
            self._store[name].update(value.float())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        # compute() syncs across processes: every rank must call it, whatever rank 0 then draws.
        gathered = {name: self._gathered(name) for name in self._store}
        self._store = {}
        if trainer.is_global_zero and gathered["labels"].numel():
            self._draw(trainer, gathered, class_names_of(trainer.datamodule))

    def _gathered(self, name: str) -> torch.Tensor:
        metric = self._store[name]
        return metric.compute().cpu() if metric.update_count else torch.empty(0)

    def _draw(self, trainer: L.Trainer, values: dict[str, torch.Tensor], names: Sequence[str]) -> None:
        writers, step = tensorboard_writers(trainer), trainer.current_epoch
        labels = values["labels"].long()
        figures = {}  # TensorBoard tag: (figure, file name)
        if self.mistakes:
            # Each metric gathers the processes' values in rank order, so the mistakes line up with these.
            wrong = values["probabilities"].argmax(dim=1) != labels
            mistakes = (values["mistake_images"], labels[wrong], values["probabilities"][wrong])
            figures["test/mistakes"] = (mistakes_figure(*mistakes, names, self.mistakes), "test_mistakes.png")
        if self.reliability:
            figure = reliability_figure(values["probabilities"], labels)
            figures["test/reliability_diagram"] = (figure, "test_reliability.png")
        for tag, (figure, file_name) in figures.items():
            pixels = render(figure)  # once, for TensorBoard and the file alike
            for writer in writers:
                writer.add_image(tag, pixels, step, dataformats="HWC")
            if self.output_dir:
                save_png(pixels, Path(self.output_dir) / file_name)
        for writer in writers:
            if self.pr_curves:
                for index, name in enumerate(names):
                    writer.add_pr_curve(
                        f"test/pr_curve/{name}", labels == index, values["probabilities"][:, index], step
                    )
            if self.embeddings and values["features"].numel():
                embed(writer, values, names, step)


def penultimate_layer(net: nn.Module) -> nn.Module:
    """The network's last linear layer: its input is the penultimate activations (64 of them in the chapter's CNN)."""
    linears = [module for module in net.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear layer to take an embedding from")
    return linears[-1]


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalised model inputs back to [0, 1] pixels."""
    return (images * PIXEL_STD + PIXEL_MEAN).clamp(0, 1)


def mistakes_figure(
    images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, names: Sequence[str], limit: int
) -> Figure:
    """Up to `limit` misclassified images, the most confident first, captioned `true → predicted (confidence)`.

    One image of tiles on one axes: a subplot per mistake takes seconds to draw.
    """
    confidence, predicted = probabilities.max(dim=1)
    order = confidence.argsort(descending=True)[:limit].tolist()
    columns = 8
    rows = max(1, -(-len(order) // columns))
    size, caption = images.shape[-1], images.shape[-1] * 3 // 4  # a tile: a two-line caption band above the image
    sheet = torch.ones(rows * (size + caption), columns * (size + 4))
    fig = Figure(figsize=(columns * 1.4, rows * 1.75 + 0.4), layout="constrained")
    ax = fig.subplots()
    for slot, index in enumerate(order):
        top, left = (slot // columns) * (size + caption) + caption, (slot % columns) * (size + 4) + 2
        sheet[top : top + size, left : left + size] = as_pixels(images[index]).squeeze(0)
        # Two lines, so that class names longer than a digit ("Ankle boot") fit above their tile.
        text = f"{names[labels[index]]}\n→ {names[predicted[index]]} ({confidence[index]:.2f})"
        ax.text(left + size / 2, top - caption / 2, text, ha="center", va="center", fontsize=7.5)
    ax.imshow(sheet.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"test: the {len(order)} most confident of {len(labels)} mistakes (true → predicted (confidence))")
    if not order:
        ax.text(sheet.shape[1] / 2, sheet.shape[0] / 2, "no mistakes", ha="center", fontsize=14)
    return fig


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS) -> dict:
    """Per equal-width confidence bin: the images in it, their mean confidence and their accuracy (NaN if empty)."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1  # (low, high] bins, as the calibration error's
    counts = torch.bincount(which, minlength=bins).float()
    return {
        "counts": counts,
        "confidence": torch.bincount(which, weights=confidence, minlength=bins) / counts,
        "accuracy": torch.bincount(which, weights=correct, minlength=bins) / counts,
    }


def reliability_figure(probabilities: torch.Tensor, labels: torch.Tensor) -> Figure:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), above the bins' counts."""
    binned = reliability_bins(probabilities, labels)
    edges = torch.linspace(0, 1, CALIBRATION_BINS + 1)
    centres, width = ((edges[:-1] + edges[1:]) / 2).numpy(), 1 / CALIBRATION_BINS
    fig = Figure(figsize=(6, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres, binned["accuracy"].nan_to_num(0).numpy(), width=width, edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(centres, binned["confidence"].numpy(), "o", color="tab:red", label="mean confidence")
    top.set(ylabel="accuracy", ylim=(0, 1), title=f"test reliability ({CALIBRATION_BINS} bins)")
    top.legend(loc="upper left")
    bottom.bar(centres, binned["counts"].numpy(), width=width, edgecolor="black", color="tab:grey")
    bottom.set(xlabel="confidence (top class probability)", ylabel="images", yscale="log", xlim=(0, 1))
    return fig


def embed(writer: SummaryWriter, values: dict[str, torch.Tensor], names: Sequence[str], step: int) -> None:
    """The penultimate activations with label, prediction and a sprite of the digits, for the PROJECTOR tab."""
    labels = values["embedded_labels"].long().tolist()
    predicted = values["embedded_probabilities"].argmax(dim=1).tolist()
    metadata = [[names[label], names[guess]] for label, guess in zip(labels, predicted, strict=True)]
    writer.add_embedding(
        values["features"],
        metadata=metadata,
        metadata_header=["label", "predicted"],
        label_img=as_pixels(values["embedded_images"]),
        global_step=step,
        tag="test/penultimate",
    )


def render(figure: Figure) -> np.ndarray:
    """The figure as an RGB array (height, width, 3)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="png")
