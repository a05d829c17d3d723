"""What the richer metrics and the pictures of the test cost, measured side by side in one process.

    python benchmarks/insight_cost.py --ckpt outputs/<date>/<time>/checkpoints/last.ckpt --data-dir ../shared/data

1. Each validation epoch: the whole MetricCollection (accuracy, macro F1, calibration error, per-class numbers)
   against accuracy alone, updated batch by batch over the validation set's predictions and computed once,
   beside the model's forward pass over the same images (what a validation epoch costs anyway), and the
   confusion figure drawn into a TensorBoard event file.
2. Once per test: `mnist-cnn-eval` with `callbacks.insight` on and off (mistakes, PR curves, embedding,
   reliability diagram), alternated, the median of `--repeats` each.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from results import save_results
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchvision.datasets import MNIST
from torchvision.transforms import v2

from mnist_cnn.confusion import confusion_figure
from mnist_cnn.eval import evaluate
from mnist_cnn.images import DIGITS
from mnist_cnn.metrics import stage_metrics
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.trained import classifier_from_checkpoint

VAL_IMAGES, BATCH = 5000, 1000  # the default validation split and evaluation batch size


def seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def validation_costs(args: argparse.Namespace) -> dict[str, float]:
    test = MNIST(args.data_dir, train=False, download=False)
    scale = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.5,), (0.5,))])
    images, labels = scale(test.data[:VAL_IMAGES].unsqueeze(1)), test.targets[:VAL_IMAGES]
    model = classifier_from_checkpoint(args.ckpt).eval()
    with torch.no_grad():
        probabilities = torch.cat([model(batch) for batch in images.split(BATCH)]).softmax(dim=1)

    def forward() -> None:
        with torch.no_grad():
            for batch in images.split(BATCH):
                model(batch)

    def measure(metric_factory: Callable[[], object]) -> Callable[[], None]:
        def work() -> None:
            metric = metric_factory()
            for batch, truth in zip(probabilities.split(BATCH), labels.split(BATCH), strict=True):
                metric.update(batch, truth)
            metric.compute()

        return work

    counts = MulticlassConfusionMatrix(10)(probabilities.argmax(dim=1), labels)
    with tempfile.TemporaryDirectory() as folder, SummaryWriter(folder) as writer:

        def draw_confusion() -> None:  # what ConfusionFigures does after each validation epoch
            figure = confusion_figure(counts, "val/confusion_matrix (epoch 0)", DIGITS)
            writer.add_figure("val/confusion_matrix", figure, global_step=0, close=False)

        return {
            "forward": seconds(forward, args.repeats),
            "accuracy only": seconds(measure(lambda: MulticlassAccuracy(10, average="micro")), args.repeats),
            "metric collection": seconds(measure(lambda: stage_metrics("val", 10)), args.repeats),
            "confusion figure": seconds(draw_confusion, args.repeats),
        }


def test_costs(args: argparse.Namespace) -> dict[str, float]:
    times: dict[str, list[float]] = {"insight on": [], "insight off": []}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for _ in range(args.repeats):
            for name, switch in (("insight on", []), ("insight off", ["callbacks.insight=null"])):
                with tempfile.TemporaryDirectory() as folder:
                    overrides = [f"ckpt_path={args.ckpt}", f"paths.data_dir={args.data_dir}", "data.download=false"]
                    overrides += [f"paths.output_dir={folder}", "export_onnx=false", "~local", *switch]
                    cfg = compose("eval", overrides=overrides)
                    start = time.perf_counter()
                    evaluate(cfg)
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by mnist-cnn-train")
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()

    validation, test = validation_costs(args), test_costs(args)
    extra = validation["metric collection"] - validation["accuracy only"]
    table = "\n".join(
        [
            "| measured | seconds | note |",
            "|---|---|---|",
            f"| validation forward pass, {VAL_IMAGES:,} images | {validation['forward']:.3f} | an epoch's floor |",
            f"| accuracy alone, per validation epoch | {validation['accuracy only']:.3f} | |",
            f"| the whole MetricCollection, per validation epoch | {validation['metric collection']:.3f} | "
            f"+{extra:.3f} s, {extra / validation['forward']:.0%} of the forward pass |",
            f"| the confusion figure, drawn into TensorBoard | {validation['confusion figure']:.3f} | "
            "per validation epoch |",
            f"| mnist-cnn-eval, insight off | {test['insight off']:.2f} | |",
            f"| mnist-cnn-eval, insight on | {test['insight on']:.2f} | "
            f"+{test['insight on'] - test['insight off']:.2f} s, once per test |",
        ]
    )
    print(table)
    save_results(args, "insight_cost", table + "\n", validation=validation, test=test)


if __name__ == "__main__":
    main()
