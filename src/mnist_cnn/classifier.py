"""The LightningModule: loss, optimisation and torchmetrics around any MNIST network."""

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mnist_cnn.callbacks import STEP_LOSS_KEY, DivergenceGuard, logger_writes_this_step
from mnist_cnn.confusion import ConfusionFigures
from mnist_cnn.images import DIGITS, IMAGE_SIZE, NUM_CLASSES
from mnist_cnn.metrics import stage_metrics
from mnist_cnn.schedule import build_scheduler, rehearse_schedule


class MNISTClassifier(L.LightningModule):
    """Trains the network described by the Hydra config `net` with cross-entropy.

    `net`, `optimizer` and `scheduler` are plain config mappings (`_target_` + arguments), not objects:
    they are saved as hyperparameters, so a checkpoint rebuilds its own model with
    `MNISTClassifier.load_from_checkpoint(path)` and loads with torch's safe `weights_only=True`.
    `channels_last` stores activations channel-innermost, which makes this small CNN's convolutions and
    pooling faster on the CPU (see benchmarks/); it changes the memory layout, not the model.
    `label_smoothing` is cross-entropy's: the target puts that much probability evenly on all classes.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        channels_last: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.net: nn.Module = instantiate(net)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        # Per-step checks skipped: they cost more than the updates, and a NaN check would make the GPU wait.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_metrics = stage_metrics("val", NUM_CLASSES)
        self.test_metrics = stage_metrics("test", NUM_CLASSES)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers the best so far
        self.val_confusion = MulticlassConfusionMatrix(NUM_CLASSES)
        self.test_confusion = MulticlassConfusionMatrix(NUM_CLASSES)
        self.class_names: tuple[str, ...] = DIGITS  # the data's, set by whoever knows it (runner, trained)
        self.confusion_counts: dict[str, torch.Tensor] = {}  # "val"/"test": the last epoch's, synced (ConfusionFigures)
        self.example_input_array = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.contiguous(memory_format=self.memory_format))

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], criterion: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        return criterion(logits, labels), logits, labels

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch, self.criterion)
        preds = logits.argmax(dim=1)
        # Plain metric updates: each `self.log` call costs about as much as a tenth of this small model's
        # step (benchmarks/), so per-step values are logged only on the steps the logger writes; not to the
        # progress bar, which would read it every step (`StepLossProgressBar` shows it).
        self.train_loss.update(loss.detach())
        self.train_acc.update(preds, labels)
        if logger_writes_this_step(self.trainer):
            self.log(STEP_LOSS_KEY, loss)
        return loss

    def configure_callbacks(self) -> list[L.Callback]:
        return [DivergenceGuard(), ConfusionFigures()]  # on whatever `callbacks=` says

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss.compute())  # compute() syncs across processes
        self.log("train/acc", self.train_acc.compute(), prog_bar=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        loss, logits, labels = self._step(batch, self.eval_criterion)  # plain cross-entropy: comparable across runs
        probabilities = logits.softmax(dim=1)
        getattr(self, f"{stage}_metrics").update(probabilities, labels)
        getattr(self, f"{stage}_confusion").update(probabilities.argmax(dim=1), labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True)
        return {"probabilities": probabilities}  # for callbacks' pictures of the test (`mnist_cnn.insight`)

    def _epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's metrics over the epoch, synced across processes; the counts kept for the figures."""
        metrics, confusion = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_confusion")
        values, counts = metrics.compute(), confusion.compute().cpu()
        metrics.reset()
        confusion.reset()
        self.confusion_counts[stage] = counts
        return values

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_metrics("val")
        if self.trainer.sanity_checking:
            return
        accuracy = values.pop("val/acc")
        self.log("val/acc", accuracy, prog_bar=True)
        self.log_dict(values)
        self.val_acc_best(accuracy)
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        values = self._epoch_metrics("test")
        # The images actually tested (fewer with limit_test_batches), from the counts synced across processes.
        values["test/images"] = self.confusion_counts["test"].sum().float()
        self.log_dict(values)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Class probabilities of a batch of preprocessed images (`mnist_cnn.image_files`)."""
        return self(batch["image"]).softmax(dim=1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        # Schedules over the whole run (one-cycle) need its optimizer steps, known once a Trainer is attached.
        steps = self.trainer.estimated_stepping_batches if self._trainer else 100
        if self._trainer:
            rehearse_schedule(self.hparams.scheduler, self.hparams.optimizer, self.trainer.max_epochs, steps)
        scheduler, interval = build_scheduler(self.hparams.scheduler, optimizer, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
