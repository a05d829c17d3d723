"""`mnist-cnn-train`: fit the configured model, test its best checkpoint, write the run's results."""

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.callbacks import CheckpointContinuity
from mnist_cnn.checkpoint import check_matches, check_resumable, read_checkpoint
from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import count_parameters, kaiming_init
from mnist_cnn.errors import ConfigError, exit_on_user_error, is_number
from mnist_cnn.metrics import class_names_of, test_results
from mnist_cnn.resume import (
    RecordEffectiveConfig,
    check_epochs,
    check_epochs_left,
    newest_checkpoint,
    resumed_config,
)
from mnist_cnn.run_dir import resume_is_off
from mnist_cnn.run_record import write_run_record
from mnist_cnn.runner import (
    CONFIG_DIR,
    build_datamodule,
    build_trainer,
    check_launch,
    check_run_settings,
    to_dict,
    write_results,
)
from mnist_cnn.sweep import in_multirun, run_job

log = logging.getLogger(__name__)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def build_module(cfg: DictConfig) -> MNISTClassifier:
    """The LightningModule, with its optimizer and scheduler tried once so bad values fail now, not mid-fit."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (is_number(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr must be a number > 0, got {lr!r}")
    # .get: a run saved before these keys existed still resumes
    label_smoothing, compile_mode, init = cfg.get("label_smoothing", 0.0), cfg.get("compile"), cfg.get("init")
    if not (is_number(label_smoothing) and 0 <= label_smoothing < 1):
        raise ConfigError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ConfigError(f"compile must be null or one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
    if init not in (None, "kaiming"):
        raise ConfigError(f"init must be null (torch's default) or kaiming, got {init!r}")
    module = MNISTClassifier(
        net=to_dict(cfg.model),
        optimizer=to_dict(cfg.optimizer),
        scheduler=to_dict(cfg.get("scheduler")),  # `~scheduler`: none
        channels_last=cfg.channels_last,
        label_smoothing=label_smoothing,
    )
    if init == "kaiming":  # a checkpoint loaded later (ckpt_path=, resume=) replaces these weights
        kaiming_init(module.net)
    if compile_mode:  # nn.Module.compile keeps the state_dict's names, so checkpoints are as without it
        module.net.compile(mode=compile_mode)
    try:
        module.configure_optimizers()
    except (ValueError, TypeError, InstantiationException) as error:
        raise ConfigError(f"optimizer/scheduler config rejected: {' '.join(str(error).split())}") from error
    return module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate everything, fit, test the best checkpoint, export; return the final metrics."""
    check_run_settings(cfg, groups=("data", "model", "optimizer", "trainer"))
    check_epochs(cfg.trainer.get("max_epochs"))
    warn_of_skipped_work(cfg)
    write_run_record(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg)
    resuming = not resume_is_off(cfg.get("resume"))
    ckpt_path = newest_checkpoint(Path(cfg.paths.output_dir)) if resuming else cfg.ckpt_path
    if ckpt_path:
        checkpoint = read_checkpoint(ckpt_path)
        check_matches(checkpoint, module, ckpt_path)
        check_resumable(checkpoint, module.hparams, ckpt_path)
        check_epochs_left(checkpoint, cfg.trainer.max_epochs, f"resume: {ckpt_path}" if resuming else f"{ckpt_path}")

    continuity = CheckpointContinuity(resuming=resuming)
    trainer = build_trainer(cfg, extra_callbacks=[continuity, RecordEffectiveConfig(cfg)])
    check_launch(trainer)
    log.info("trainable parameters: %s", f"{count_parameters(module.net):,}")  # exact; Lightning's table rounds
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if OmegaConf.select(cfg, "callbacks.optuna_pruning"):  # imported only then: optuna is slow to import
        from mnist_cnn.pruning import raise_if_pruned

        raise_if_pruned(trainer)
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    results = {
        "val_acc_best": best_val_acc(module),
        "epochs": trainer.current_epoch,
        "train_seconds": round(continuity.train_seconds(), 2),
        "train_images": len(datamodule.train_set),
        "checkpoint": best_path or None,
    }
    if cfg.get("test", True):  # hyperparameter searches set test=false: they select on validation only
        start = time.perf_counter()
        (test_metrics,) = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None)
        results["test_seconds"] = round(time.perf_counter() - start, 2)
        results.update(test_results(test_metrics, class_names_of(datamodule)))
    elif best_path:  # export the model that metrics.json names, as a tested run does
        module.load_state_dict(read_checkpoint(best_path)["state_dict"])
    return write_results(cfg, trainer, module, results)


def warn_of_skipped_work(cfg: DictConfig) -> None:
    """Settings that are valid but do less than a user may expect: said once, at the start."""
    if cfg.trainer.get("max_epochs") == 0:
        log.warning("trainer.max_epochs=0: nothing is trained; the test and the exports use the initial weights")
    if cfg.get("robustness") and not cfg.get("test", True):
        log.warning("robustness=true measures the test set, which test=false skips: no robustness.csv")


def best_val_acc(module: MNISTClassifier) -> float | None:
    """The best validation accuracy of the run's whole history: the state checkpoints carry, not this segment's log."""
    best = float(module.val_acc_best.max_value)
    return best if math.isfinite(best) else None  # -inf: validation never ran


def train_from_config(cfg: DictConfig) -> dict[str, Any]:
    return train(cfg if resume_is_off(cfg.get("resume")) else resumed_config(cfg))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> dict[str, Any]:
    """One run; in a multirun (`-m`), one job of the sweep, whose failure does not end the sweep."""
    if in_multirun():
        return run_job(train_from_config, cfg)
    with exit_on_user_error():
        return train_from_config(cfg)


if __name__ == "__main__":
    main()
