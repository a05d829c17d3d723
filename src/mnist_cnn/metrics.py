"""What a run measures on validation and test data: one torchmetrics `MetricCollection` per stage.

Every process updates its own copy; `compute()` syncs them, so the numbers are the whole set's under DDP.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from mnist_cnn.images import DIGITS

CALIBRATION_BINS = 15  # the usual choice for expected calibration error (Guo et al. 2017)
PER_CLASS = {"accuracy": MulticlassAccuracy, "precision": MulticlassPrecision, "recall": MulticlassRecall}


def stage_metrics(stage: str, num_classes: int) -> MetricCollection:
    """`<stage>/acc`, `<stage>/macro_f1`, `<stage>/calibration_error` and `<stage>/class_<measure>/<class index>`.

    Updated with class probabilities (the calibration error needs them; the others take their argmax).
    """
    per_class = {
        measure: ClasswiseWrapper(metric(num_classes, average=None), prefix=f"class_{measure}/")
        for measure, metric in PER_CLASS.items()
    }
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
            "calibration_error": MulticlassCalibrationError(num_classes, n_bins=CALIBRATION_BINS),
            **per_class,
        },
        prefix=f"{stage}/",
        # Shared states would save little here, and torchmetrics then warns that the wrapped per-class
        # metrics were computed before an update (their states are shared, their update flags are not).
        compute_groups=False,
    )


def class_names_of(datamodule: Any) -> Sequence[str]:
    """The data's class names, in label order (the digits unless the data module names its classes)."""
    return tuple(getattr(datamodule, "class_names", DIGITS))


def test_results(logged: Mapping[str, float], class_names: Sequence[str]) -> dict[str, Any]:
    """The `metrics.json` entries of a test: overall numbers, and each class's accuracy, precision and recall."""
    return {
        "test_acc": logged["test/acc"],
        "test_loss": logged["test/loss"],
        "test_macro_f1": logged["test/macro_f1"],
        "test_calibration_error": logged["test/calibration_error"],
        "test_images": int(logged["test/images"]),
        "test_per_class": {
            name: {measure: logged[f"test/class_{measure}/{index}"] for measure in PER_CLASS}
            for index, name in enumerate(class_names)
        },
    }
