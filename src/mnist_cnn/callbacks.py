"""Callbacks of our own, kept to what Lightning's do not already do."""

import logging
import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar, WeightAveraging
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMAWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.tensorboard import SummaryWriter

from mnist_cnn.errors import CheckpointError, TrainingDivergedError

log = logging.getLogger(__name__)


def tensorboard_writers(trainer: L.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of the run's TensorBoard loggers (other loggers cannot hold pictures)."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def logger_writes_this_step(trainer: L.Trainer) -> bool:
    """Whether the loggers write at the step about to run (Lightning's own test)."""
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0


class DivergenceGuard(Callback):
    """Stop at the first non-finite loss, before its update, and never checkpoint non-finite weights.

    Reading the loss on the host makes a GPU wait, so there it is read on logging steps only; between them
    a non-finite update is still caught when a checkpoint is saved.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if pl_module.device.type != "cpu" and not logger_writes_this_step(trainer):
            return
        if not torch.isfinite(loss):
            batch = trainer.fit_loop.epoch_loop.batch_idx
            raise TrainingDivergedError(
                f"training diverged: the loss is {loss.item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}, batch {batch}); stopped before that update, checkpoints kept as they were"
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        broken = [name for name, tensor in pl_module.named_parameters() if not torch.isfinite(tensor).all()]
        if broken:
            raise TrainingDivergedError(f"training diverged: non-finite weights in {', '.join(broken[:3])}; not saved")


STEP_LOSS_KEY = "train/loss_step"  # logged on the steps the logger writes


class StepLossProgressBar(TQDMProgressBar):
    """Lightning's progress bar, also showing the newest logged training loss.

    Lightning turns every `prog_bar=True` value into a number after each training step, which on a GPU
    makes the host wait for the step to finish; the step loss is therefore logged without `prog_bar`, and
    read here when the bar redraws, once per logged value.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate, process_position, leave)
        self._last_read: tuple[torch.Tensor, float] | None = None  # the logged tensor and its value

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.logged_metrics.get(STEP_LOSS_KEY)
        if loss is None:
            return metrics
        if self._last_read is None or self._last_read[0] is not loss:
            self._last_read = (loss, loss.item())
        metrics[STEP_LOSS_KEY] = self._last_read[1]
        return metrics


RNG_STATE_KEY = "rng_states"
TRAIN_SECONDS_KEY = "train_seconds"
WEIGHT_AVERAGING_RAW_KEY = "current_model_state"  # where Lightning's WeightAveraging keeps the trained weights


class CheckpointContinuity(Callback):
    """What a start from a checkpoint carries over: everything when resuming a run, only the model otherwise.

    Every checkpoint gets torch's RNG state (it drives shuffling) and the seconds trained so far. Resuming
    (`resume=...`) restores both, so a run continues exactly as if never stopped. A new run from a checkpoint
    (`ckpt_path=...`) keeps its own seed and clock, and starts its own record of the best validation accuracy
    and best checkpoint: what it reports is about its own epochs, not the source run's. Either way, a
    checkpoint of a run with weight averaging, fitted on without it, trains on from its raw weights.
    """

    def __init__(self, resuming: bool) -> None:
        self.resuming = resuming
        self.seconds_before = 0.0  # trained by earlier segments of this run, as of the checkpoint resumed from
        self._started: float | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # loading weights to test must not touch the caller's random state
        check_schedule_length(checkpoint, trainer)
        train_on_from_raw_weights(checkpoint, trainer, pl_module)
        if not self.resuming:
            return
        follow_moved_run_folder(checkpoint, trainer)
        self.seconds_before = float(checkpoint.get(TRAIN_SECONDS_KEY) or 0.0)
        states = checkpoint.get(RNG_STATE_KEY) or {}
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        device = trainer.strategy.root_device  # the module may not be on it yet while restoring
        if "cuda" in states and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], device)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after Lightning restored the module and callbacks from `ckpt_path`, before the first step.
        if trainer.ckpt_path and not self.resuming:
            if hasattr(pl_module, "val_acc_best"):
                pl_module.val_acc_best.reset()
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):  # Lightning keeps the source's best_model_path
                    callback.best_model_path, callback.best_model_score = "", None
                    callback.best_k_models, callback.kth_best_model_path = {}, ""
                    callback.last_model_path = ""
        self._started = time.perf_counter()

    def train_seconds(self) -> float:
        """Seconds this run has trained: earlier segments (as checkpointed) plus this one so far."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[TRAIN_SECONDS_KEY] = round(self.train_seconds(), 3)
        checkpoint[RNG_STATE_KEY] = {"torch": torch.get_rng_state()}
        device = trainer.strategy.root_device
        if device.type == "cuda":
            checkpoint[RNG_STATE_KEY]["cuda"] = torch.cuda.get_rng_state(device)


RECORDED_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


def follow_moved_run_folder(checkpoint: dict, trainer: L.Trainer) -> None:
    """Resuming a run folder that was copied or moved: each `ModelCheckpoint` keeps its record of saved files.

    Lightning restores a `ModelCheckpoint`'s record (its best k files and their scores) only when the folder is
    unchanged. In a moved folder the resumed run would start a new record: the files saved before stay behind,
    and any later epoch, however worse, becomes the best that is tested. The record follows the folder when all
    of its files are in the new one under the same names; otherwise Lightning's choice stands.
    """
    states = checkpoint.get("callbacks") or {}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.state_key in states:
            states[callback.state_key] = relocated_record(states[callback.state_key], callback.dirpath)


def relocated_record(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """A `ModelCheckpoint.state_dict()` with its files' folder replaced by `dirpath`, if they are all there."""
    old = state.get("dirpath")
    if not old or not dirpath or old == dirpath:
        return state
    best_k = state.get("best_k_models") or {}
    paths = {path for path in (*(state.get(key) for key in RECORDED_PATHS), *best_k) if path}
    moved = {path: os.path.join(dirpath, os.path.basename(path)) for path in paths if os.path.dirname(path) == old}
    if len(moved) < len(paths) or not all(os.path.isfile(path) for path in moved.values()):
        return state
    renamed = {key: moved.get(state[key], state[key]) for key in RECORDED_PATHS if key in state}
    return {**state, **renamed, "dirpath": dirpath, "best_k_models": {moved[p]: score for p, score in best_k.items()}}


def train_on_from_raw_weights(checkpoint: dict, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """A checkpoint of a run with weight averaging, fitted on without it: train on from its raw weights.

    Such a checkpoint's `state_dict` is the average; the weights that were being trained, which its optimizer
    state belongs to, are under `current_model_state`. Lightning's averaging callback swaps them back; without
    it Lightning would train on from the average with the raw weights' optimizer state.
    """
    raw = checkpoint.get(WEIGHT_AVERAGING_RAW_KEY)
    if raw is None or any(isinstance(callback, WeightAveraging) for callback in trainer.callbacks):
        return
    pl_module.load_state_dict(raw)
    rank_zero_info(
        "the checkpoint holds an average of the weights; without an averaging callback (callbacks.ema or .swa) "
        "this run trains on from the raw weights it averaged, which the optimizer state belongs to"
    )


def check_schedule_length(checkpoint: dict, trainer: L.Trainer) -> None:
    """A one-cycle schedule restored from a checkpoint keeps its planned steps: a longer run would crash late.

    The run's steps are asked for only when there is such a schedule: Lightning sets up the training data to
    count them, and doing that early for every resume would change what the resumed run draws.
    """
    for state in checkpoint.get("lr_schedulers") or []:
        planned = state.get("total_steps")
        steps = trainer.estimated_stepping_batches if planned is not None else None
        if planned is not None and planned != steps:
            raise CheckpointError(
                f"the checkpoint's lr schedule is planned for {planned} steps, this run has {steps}: "
                "resume with the same trainer.max_epochs and batch size"
            )


class AverageOnceUpdated(WeightAveraging):
    """Lightning's weight averaging, with two fixes: no average before its first update; the average kept to test.

    Before the first update (a delayed start: `update_starting_at_step`, or SWAWeightAveraging's `start_epoch`)
    Lightning's average is the copy of the untrained model it made at setup, and it validates, checkpoints and
    finally exports that copy (Lightning issue #21724). Here, until the first update, validation, checkpoints and the
    end of the fit use the weights being trained.

    Once it holds an average, Lightning's callback also puts a checkpoint's raw training weights back into the
    module on every load, `trainer.test(ckpt_path=best)` after the fit included: the test would then score the
    weights the average was meant to replace. Outside fitting the checkpoint's `state_dict`, the average, stays.
    """

    def averaged(self) -> bool:
        """Whether the average has been updated at least once (it is only a copy of the initial model before)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaged():  # no update happens during validation: the swap back below sees the same answer
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaged():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaged():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._average_model is not None and not self.averaged():
            # The first update copies the weights anyway, so until then the average may as well be them.
            self._average_model.module.load_state_dict(pl_module.state_dict())
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class EMAWeightAveraging(AverageOnceUpdated, LightningEMAWeightAveraging):
    """Lightning's exponential moving average of the weights, with `AverageOnceUpdated`'s fixes and a cheaper update.

    The average is updated with torch's `get_ema_multi_avg_fn` (one `_foreach_lerp_` over all the weights)
    rather than Lightning's per-tensor `avg_fn`: the same average up to rounding, at under half the cost per
    update (benchmarks/options.py). Unlike Lightning's class, it takes no further `AveragedModel` arguments.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
    ) -> None:
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        # Lightning hands AveragedModel a per-tensor avg_fn, which excludes a multi_avg_fn: replaced here.
        self._kwargs = {"multi_avg_fn": get_ema_multi_avg_fn(decay)}


class SWAWeightAveraging(AverageOnceUpdated):
    """Stochastic weight averaging (Izmailov et al. 2018): the plain mean of the weights after every optimizer step
    from epoch `start_epoch` (counted from 0) on, with `AverageOnceUpdated`'s fixes.

    Lightning's `WeightAveraging` averages equally when given no averaging function; this class only says when.
    Lightning's older `StochasticWeightAveraging` callback would not do here: it averages once per epoch and
    replaces the lr schedule, and its average reaches the module only when the fit ends, never validation or a
    checkpoint, so the test of the best checkpoint would not see it.
    """

    def __init__(
        self, start_epoch: int = 3, device: torch.device | str | int | None = None, use_buffers: bool = True
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers)
        self.start_epoch = start_epoch
        self._epoch = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        # Set here, not at epoch start: Lightning skips that hook when a run resumes mid-epoch.
        self._epoch = trainer.current_epoch
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self._epoch >= self.start_epoch
