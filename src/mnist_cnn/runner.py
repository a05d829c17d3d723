"""What training and evaluation share: a Trainer built from config, and a run's result files."""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.checkpoint import AtomicCheckpointIO
from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import count_parameters
from mnist_cnn.confusion import save_confusion_matrix
from mnist_cnn.errors import ConfigError, first_line, is_integer, user_error_in
from mnist_cnn.exporters import export_onnx
from mnist_cnn.files import save_torch, write_json
from mnist_cnn.metrics import class_names_of
from mnist_cnn.robustness import RobustnessCheck
from mnist_cnn.run_record import has_native_bf16, machine
from mnist_cnn.sweep import RELAUNCH_IN_SWEEP, in_multirun

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def to_dict(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (None stays None)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


MAX_SEED = 2**32 - 1  # numpy's generators take seeds in [0, 2**32)


def check_run_settings(cfg: DictConfig, groups: Sequence[str]) -> None:
    """Raise unless the config has each of `groups` (`~model` removes one) and a usable seed and thread count."""
    removed = [group for group in groups if not isinstance(cfg.get(group), DictConfig)]
    if removed:
        raise ConfigError(
            f"the config has no {' and no '.join(removed)}: choose an option ({removed[0]}=<option>) instead of "
            f"removing the group (~{removed[0]})"
        )
    seed, threads = cfg.get("seed"), cfg.get("threads")
    if not (is_integer(seed) and 0 <= seed <= MAX_SEED):
        key = "seed (or base_seed, which sets it)" if "base_seed" in cfg else "seed"
        raise ConfigError(f"{key} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if threads is not None and not (is_integer(threads) and threads >= 1):
        raise ConfigError(f"threads must be null (one per core) or an integer >= 1, got {threads!r}")
    check_outputs(cfg)


def check_outputs(cfg: DictConfig) -> None:
    """Raise unless the run can test and write what it promises: checked before it trains or tests."""
    if cfg.get("test", True) and OmegaConf.select(cfg, "trainer.limit_test_batches") == 0:
        raise ConfigError("trainer.limit_test_batches=0 tests nothing: give a count or fraction > 0, or test=false")
    if not cfg.get("export_path"):
        return
    weights = Path(cfg.export_path)
    if weights.is_dir():
        raise ConfigError(
            f"export_path={weights} is a folder: give the file the weights go to (e.g. {weights}/model.pth)"
        )
    if cfg.get("export_onnx") and weights.suffix == ".onnx":  # the ONNX export, beside it, would replace the weights
        raise ConfigError(f"export_path={weights} is where the weights (a .pth) go; the .onnx is written beside it")


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data module, with its augmentation built now, so a value torchvision rejects fails before training."""
    try:
        return instantiate(cfg.data)
    except InstantiationException as error:
        ours = user_error_in(error)
        if ours is not None:
            raise ours from error  # our own check's error, not Hydra's wrapper around it
        if not isinstance(error.__cause__, ValueError | TypeError):
            raise  # anything but a rejected value is a bug to show in full
        reason = " ".join(str(error).split())
        raise ConfigError(f"data config rejected: {reason}") from error


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The configured Trainer; `extra_callbacks` are ours that run whatever `callbacks=` says."""
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    # In config order: the first ModelCheckpoint (`model_checkpoint`) is the one whose best model is tested.
    chosen = cfg.get("callbacks") or {}
    named = {
        name: instantiate(chosen[name]) for name in chosen if not OmegaConf.is_missing(chosen, name) and chosen[name]
    }
    averages = [name for name, callback in named.items() if isinstance(callback, WeightAveraging)]
    if len(averages) > 1:  # each would swap its own average into the same module
        raise ConfigError(
            f"callbacks: one average of the weights at a time, got {' and '.join(averages)}; "
            f"set the others to null (callbacks.{averages[0]}=null)"
        )
    if not loggers:  # `~logger`: Lightning refuses a learning-rate monitor with nothing to write to
        monitors = [name for name, callback in named.items() if isinstance(callback, LearningRateMonitor)]
        for name in monitors:
            log.info(f"no logger: callbacks.{name} left out, it has nothing to write to")
            del named[name]
    callbacks = [*named.values(), *extra_callbacks]
    if cfg.get("robustness"):
        callbacks.append(RobustnessCheck(cfg.paths.output_dir))
    try:
        trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    except InstantiationException as error:
        if not isinstance(error.__cause__, MisconfigurationException | ValueError | TypeError):
            raise
        raise ConfigError(f"trainer config rejected: {first_line(error.__cause__)}") from error
    warn_if_bf16_is_emulated(trainer)
    return trainer


def warn_if_bf16_is_emulated(trainer: L.Trainer) -> None:
    """bf16 on a CPU without bfloat16 instructions runs, but 7x slower than float32 for fast (docs/recipes.md)."""
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and str(trainer.precision).startswith("bf16") and not has_native_bf16(machine()):
        log.warning(
            "trainer.precision=%s on a CPU without native bfloat16 (AVX-512 BF16, AMX or ARM bf16), or with oneDNN "
            "capped below it: it is emulated, several times slower than trainer.precision=32-true",
            trainer.precision,
        )


def check_launch(trainer: L.Trainer) -> None:
    """Refuse, before anything starts, a strategy that would re-run the command line per process inside a sweep.

    Lightning's `ddp` starts its other processes by running the same command again (Lightning issue 11300):
    inside a Hydra multirun that command is the whole sweep. Where a cluster starts the processes (SLURM,
    torchrun), nothing is re-run, and a sweep is fine.
    """
    relaunches = isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    if relaunches and not trainer.strategy.cluster_environment.creates_processes_externally and in_multirun():
        raise ConfigError(f"trainer.strategy={trainer.strategy.strategy_name} {RELAUNCH_IN_SWEEP}")


def _hparams(cfg: DictConfig, module: MNISTClassifier) -> dict[str, Any]:
    """The settings worth comparing runs by, as readable columns of TensorBoard's HPARAMS tab.

    Model, optimizer and scheduler come from the module, which for eval holds the checkpoint's own.
    """
    net, optimizer, scheduler = module.hparams.net, module.hparams.optimizer, module.hparams.scheduler or {}
    return {
        "model": _class_name(net) + (f" ({net['conv']})" if net.get("conv", "standard") != "standard" else ""),
        "optimizer": _class_name(optimizer),
        "lr": optimizer.get("lr"),
        "weight_decay": optimizer.get("weight_decay", 0.0),
        "scheduler": _class_name(scheduler) or "none",
        "batch_size": cfg.data.batch_size,
        "augmentation": describe_augmentation(cfg.data),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "seed": cfg.seed,
    }


def _class_name(node: Any) -> str:
    return str((node or {}).get("_target_", "")).rsplit(".", 1)[-1]


EXTRA_AUGMENTATION = {"translate": "shift", "scale": "scale", "elastic_alpha": "elastic"}  # RandomAffine's, when on


def describe_augmentation(data: DictConfig) -> str:
    """`flip 0.5, rotate 10` (either data path), `none`, or the transforms' class names."""
    nodes = data.get("augmentation") or []
    nodes = [nodes] if isinstance(nodes, DictConfig) else list(nodes)
    parts = []
    for node in nodes:
        settings = {key: value for key, value in to_dict(node).items() if key != "_target_"}
        flip = settings.get("flip_p", settings.get("p") if "Flip" in _class_name(node) else None)
        if flip is not None:
            parts.append(f"flip {flip:g}")
        if "degrees" in settings:
            degrees = settings["degrees"]
            parts.append(f"rotate {degrees:g}" if isinstance(degrees, int | float) else f"rotate {degrees}")
        extra = {name: settings.get(key) for key, name in EXTRA_AUGMENTATION.items()}
        parts += [f"{name} {value:g}" for name, value in extra.items() if isinstance(value, int | float) and value]
        if settings.get("interpolation") == "bilinear":  # nearest, the chapter's, goes unsaid
            parts.append("bilinear")
        if flip is None and "degrees" not in settings:
            parts.append(_class_name(node))
    return ", ".join(parts) or "none"


def log_final_metrics(trainer: L.Trainer, params: dict[str, Any], metrics: dict[str, float | None]) -> None:
    """Record the run's hyperparameters together with its final metrics in every logger.

    Lightning has closed its loggers after `test`; writing reopens them, so close them again.
    """
    hp_metrics = {f"hp/{name}": value for name, value in metrics.items() if value is not None}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=hp_metrics)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(hp_metrics)
        logger.finalize("success")


def write_results(cfg: DictConfig, trainer: L.Trainer, module: MNISTClassifier, results: dict[str, Any]) -> dict:
    """Export the weights, save the test confusion matrix, log and write `metrics.json`; return the metrics."""
    if not trainer.is_global_zero:
        return results
    output_dir = Path(cfg.paths.output_dir)
    weights_path = Path(cfg.export_path)
    module.class_names = tuple(class_names_of(trainer.datamodule))  # into the ONNX metadata
    save_torch(module.net.state_dict(), weights_path)
    onnx_path = export_onnx(module, weights_path.with_suffix(".onnx")) if cfg.get("export_onnx") else None
    if "test" in module.confusion_counts:
        save_confusion_matrix(module.confusion_counts["test"], output_dir, module.class_names)
    metrics = {
        **results,
        "parameters": count_parameters(module.net),
        "augment_eval": bool(cfg.data.augment_eval),
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "weights": str(weights_path),
        "onnx": str(onnx_path) if onnx_path else None,
    }
    final = {key: results.get(key) for key in ("test_acc", "test_loss", "val_acc_best")}
    params = _hparams(cfg, module)
    if "train_images" in results:  # a training run's: with data.train_size, the x axis of a learning curve
        params["train_images"] = results["train_images"]
    if "init" in cfg:  # a training run's; eval's config does not say how its checkpoint started
        params["init"] = cfg.init or "torch default"
    log_final_metrics(trainer, params, final)
    write_json(output_dir / "metrics.json", metrics)
    summary = " ".join(f"{key}={_format(key, value)}" for key, value in metrics.items() if not isinstance(value, dict))
    log.info("summary: %s", summary)
    print(f"mnist-cnn: {summary} run_dir={output_dir}")
    return metrics


def _format(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if is_integer(value) and key != "seed":
        return f"{value:,}"
    return str(value)
