"""`predictions.csv` and `preprocessed.png` for `mnist-cnn-predict`, as a Lightning `BasePredictionWriter`."""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from matplotlib.figure import Figure
from PIL import Image

from mnist_cnn.files import atomic_path
from mnist_cnn.images import DIGITS
from mnist_cnn.preprocess import upright_grey
from mnist_cnn.tables import write_csv

log = logging.getLogger(__name__)

COLUMNS = ["file", "prediction", "confidence", "top3", "error"]
SHEET_ROWS = 48  # images on the contact sheet at most


class PredictionFiles(BasePredictionWriter):
    """Collect each batch's predictions; when prediction ends, write the table and the contact sheet into
    `output_dir` and print the first rows. Files with an error get a row with the error and no prediction."""

    def __init__(self, output_dir: str | Path, shown: int = 10) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.shown = Path(output_dir), shown
        self.rows: list[dict[str, Any]] = []
        self.digits: list[np.ndarray] = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.rows += describe_batch(batch, prediction.float().cpu(), pl_module.class_names)
        self.digits += list(batch["digit"])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            write_predictions(self.rows, self.digits, self.output_dir, self.shown)


def write_predictions(rows: list[dict[str, Any]], digits: list[np.ndarray], output_dir: Path, shown: int) -> None:
    """`predictions.csv` and `preprocessed.png` into `output_dir`; the first `shown` rows printed as a table."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv([{**row, "file": printable(row["file"])} for row in rows], COLUMNS, output_dir / "predictions.csv")
    contact_sheet(rows, digits, output_dir / "preprocessed.png")
    print(table(rows[:shown]), end="")
    failed = sum(bool(row["error"]) for row in rows)
    more = f" (first {shown} shown)" if len(rows) > shown else ""
    print(f"{len(rows)} images{more}, {failed} with errors: {output_dir / 'predictions.csv'}")


def describe_batch(
    batch: dict[str, Any], probabilities: torch.Tensor, names: Sequence[str] = DIGITS
) -> list[dict[str, Any]]:
    """The CSV rows of one batch of `mnist_cnn.image_files` and the model's class probabilities for it."""
    items = zip(batch["file"], probabilities, batch["error"], strict=True)
    return [describe(file, row, error, names) for file, row, error in items]


def describe(file: str, probabilities: torch.Tensor, error: str, names: Sequence[str] = DIGITS) -> dict[str, Any]:
    """One CSV row: the class (the digit, for MNIST), its probability, the three likeliest as `class:prob` pairs."""
    if error:
        return {"file": file, "prediction": "", "confidence": "", "top3": "", "error": error}
    top = probabilities.topk(3)
    pairs = " ".join(f"{names[int(i)]}:{float(p):.3f}" for p, i in zip(top.values, top.indices, strict=True))
    return {
        "file": file,
        "prediction": names[int(top.indices[0])],
        "confidence": round(float(top.values[0]), 4),
        "top3": pairs,
        "error": "",
    }


def printable(path: str) -> str:
    """A file's path as UTF-8 text: bytes of a name that is not UTF-8 (a Latin-1 one, say) as `\\xe9` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'file':<40} {'digit':>5} {'conf':>6}  top3 / error"]
    for row in rows:
        name = printable(Path(row["file"]).name)[-40:]
        confidence = f"{row['confidence']:.3f}" if row["confidence"] != "" else ""
        lines.append(f"{name:<40} {row['prediction']!s:>5} {confidence:>6}  {row['error'] or row['top3']}")
    return "\n".join(lines) + "\n"


def contact_sheet(rows: list[dict[str, Any]], digits: list[np.ndarray], path: Path) -> Path:
    """Each input beside the 28x28 image the model saw, titled with the predicted digit (or the error)."""
    shown = list(zip(rows, digits, strict=True))[:SHEET_ROWS]
    columns = 4
    lines = (len(shown) + columns - 1) // columns
    fig = Figure(figsize=(columns * 2.6, lines * 1.5 + 0.2))
    axes = fig.subplots(lines, columns * 2, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for index, (row, digit) in enumerate(shown):
        line, column = divmod(index, columns)
        original, seen = axes[line][2 * column], axes[line][2 * column + 1]
        original.imshow(_thumbnail(row["file"]), cmap="gray", vmin=0, vmax=255)
        original.set_title(printable(Path(row["file"]).name)[-18:], fontsize=7, parse_math=False)  # `$` is text
        seen.imshow(digit, cmap="gray", vmin=0, vmax=1)
        title = (
            f"{row['prediction']} ({row['confidence']:.2f})" if not row["error"] else row["error"].split(":")[0][:24]
        )
        seen.set_title(
            title, fontsize=9 if not row["error"] else 6, color="black" if not row["error"] else "red", parse_math=False
        )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def _thumbnail(file: str) -> np.ndarray:
    """The input as a viewer shows it (upright, transparency on white, deep greys scaled), 96 px at most."""
    try:
        with Image.open(file) as image:
            image.draft("L", (96, 96))  # a JPEG decodes at a fraction of its size
            grey = upright_grey(image)
        grey.thumbnail((96, 96))
        return np.asarray(grey)
    except (OSError, ValueError, Image.DecompressionBombError):  # its row already says why it could not be read
        return np.zeros((28, 28), dtype=np.uint8)
