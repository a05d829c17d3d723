"""`resume=...`: continue a run in its own folder, from its newest checkpoint, with the config it last used.

A run is one or more segments: the first command, then each accepted resume. Every segment writes the config
it trains with to `<run>/.hydra/effective_config.yaml` (interpolations kept, the run's seed and TensorBoard
run pinned), and a resume starts from that file: a second resume remembers what the first one changed.
A resume is checked before Hydra writes anything into the run's folder (`mnist_cnn.run_dir` calls
`check_resume` while naming the folder), so a refused one leaves the run exactly as it was.
"""

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.checkpoint import check_resumable, read_checkpoint
from mnist_cnn.errors import CheckpointError, ConfigError, is_integer
from mnist_cnn.files import atomic_path
from mnist_cnn.run_dir import CHECKPOINT_DIR
from mnist_cnn.run_record import RESOLVED_CONFIG
from mnist_cnn.runner import to_dict
from mnist_cnn.sweep import override_key

log = logging.getLogger(__name__)

EFFECTIVE_CONFIG = "effective_config.yaml"

# What a resumed run may change: how long it trains, where data lives, which hardware and how it reports.
RESUME_OVERRIDABLE = (
    "resume",
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "paths.data_dir",
    "callbacks.progress_bar.refresh_rate",
)


def command_overrides() -> list[str]:
    """This command's overrides (`key=value`) but `resume` itself and `local` (this machine's config group,
    which a resumed run does not compose again); none outside a Hydra run."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if override_key(o) not in ("resume", "local")]


def check_overrides(overrides: list[str]) -> None:
    refused = [override for override in overrides if override_key(override) not in RESUME_OVERRIDABLE]
    if refused:
        allowed = ", ".join(RESUME_OVERRIDABLE[1:])
        raise ConfigError(f"resume continues a run with its own config; it accepts only {allowed} (got {refused[0]})")


def check_epochs(max_epochs: Any) -> None:
    if not (is_integer(max_epochs) and max_epochs >= 0):
        raise ConfigError(f"trainer.max_epochs must be an integer >= 0, got {max_epochs!r}")


def check_resume(run_dir: Path) -> None:
    """Raise unless this command may resume `run_dir`: allowed overrides, epochs left to train, and a saved
    optimizer and schedule that the resumed settings do not contradict."""
    overrides = command_overrides()
    check_overrides(overrides)
    saved = effective_config(run_dir)
    config = saved.copy()
    for override in OverridesParser.create().parse_overrides(overrides):
        OmegaConf.update(config, override.key_or_group, override.value(), force_add=True)
    path = newest_checkpoint(run_dir)
    checkpoint = read_checkpoint(path)
    max_epochs, source = OmegaConf.select(config, "trainer.max_epochs"), f"resume: {run_dir} ({path.name})"
    check_epochs(max_epochs)
    check_epochs_left(checkpoint, max_epochs, source)
    wanted = {key: to_dict(config.get(key)) for key in ("optimizer", "scheduler")}  # `~scheduler`: None
    check_resumable(checkpoint, wanted, path)  # e.g. cosine's T_max follows trainer.max_epochs
    planned = [state.get("total_steps") for state in checkpoint.get("lr_schedulers") or []]
    length = ("trainer.max_epochs", "trainer.devices")  # what sets the run's number of optimizer steps
    changed = [key for key in length if OmegaConf.select(config, key) != OmegaConf.select(saved, key)]
    if any(planned) and changed:
        was = ", ".join(f"{key}={OmegaConf.select(saved, key)}" for key in length)
        raise CheckpointError(
            f"{source}: its lr schedule is planned for {planned[0]} optimizer steps ({was}); resume with those"
        )


def epochs_trained(checkpoint: dict[str, Any]) -> tuple[int, bool]:
    """(whole epochs trained, whether the checkpoint is part-way through the next one)."""
    progress = (checkpoint.get("loops") or {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    whole = int(progress.get("processed", checkpoint.get("epoch", 0)))
    return whole, whole == checkpoint.get("epoch", 0)  # mid-epoch: `epoch` is the one still running


def check_epochs_left(checkpoint: dict[str, Any], max_epochs: Any, source: str) -> None:
    """Raise unless fitting from `checkpoint` up to `max_epochs` trains something (Lightning would silently not)."""
    if not isinstance(max_epochs, int) or checkpoint.get("epoch") is None:
        return  # not a number: check_epochs says so
    whole, mid_epoch = epochs_trained(checkpoint)
    if max_epochs > whole:
        return
    if max_epochs == whole and not mid_epoch:
        raise ConfigError(
            f"{source} has already trained all {_epochs(whole)}: nothing left to train (a larger trainer.max_epochs "
            "trains it longer; mnist-cnn-eval ckpt_path=... tests it)"
        )
    done = f"{_epochs(whole)} and part of the next" if mid_epoch else _epochs(whole)
    raise ConfigError(f"{source} has already trained {done}: trainer.max_epochs={max_epochs} is fewer")


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def effective_config(run_dir: Path) -> DictConfig:
    """The config the run's latest segment trained with (for runs from before that file: its first config)."""
    latest = run_dir / ".hydra" / EFFECTIVE_CONFIG
    if latest.is_file():
        return _upgrade(OmegaConf.load(latest))
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume: {run_dir} has no saved config ({saved})")
    original = OmegaConf.load(saved)
    resolved = saved.with_name(RESOLVED_CONFIG)
    if resolved.is_file():  # as this run used them: a multirun job's seed and TensorBoard run are its own
        _pin_run_identity(original, OmegaConf.load(resolved))
    return _upgrade(original)


def _upgrade(config: DictConfig) -> DictConfig:
    """A config saved by an earlier version, in today's names: resuming an old run keeps working."""
    summary = OmegaConf.select(config, "callbacks.model_summary._target_")
    if summary == "mnist_cnn.callbacks.ExactModelSummary":
        config.callbacks.model_summary._target_ = "lightning.pytorch.callbacks.ModelSummary"
    data = config.get("data")
    if isinstance(data, DictConfig) and "augmentations" in data:  # the classic path's old key
        data.augmentation = data.pop("augmentations")
    return config


def _pin_run_identity(config: DictConfig, used: DictConfig) -> None:
    """Fix the values a resume must not re-derive: the seed (a sweep job's own) and the TensorBoard run."""
    config.seed = used.seed
    if OmegaConf.select(config, "logger.tensorboard"):
        config.logger.tensorboard.version = used.logger.tensorboard.version


class RecordEffectiveConfig(L.Callback):
    """Write the run's effective config when training starts: after the checkpoint is restored and every check
    has passed, so a segment refused on the way never becomes the config the next resume continues with."""

    def __init__(self, cfg: DictConfig) -> None:
        # Prepared here, in the process Hydra started: ddp_spawn's processes have no Hydra resolvers.
        config = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        _pin_run_identity(config, cfg)
        self.text = OmegaConf.to_yaml(config)
        self.path = Path(cfg.paths.output_dir) / ".hydra" / EFFECTIVE_CONFIG

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                tmp.write_text(self.text)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The run's latest config, with this command's allowed overrides applied."""
    run_dir = Path(cfg.paths.output_dir)
    overrides = command_overrides()
    check_overrides(overrides)
    config = effective_config(run_dir)
    if OmegaConf.select(config, "callbacks.optuna_pruning"):  # a resumed trial reports to no study
        config.callbacks.optuna_pruning = None
    for key in dict.fromkeys(override_key(o) for o in overrides):
        OmegaConf.update(config, key, OmegaConf.select(cfg, key), force_add=True)
    if OmegaConf.select(config, "logger.csv"):  # Lightning's CSVLogger would delete the earlier metrics.csv
        config.logger.csv.version = f"resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    config.resume = True
    log.info("resuming %s", run_dir)
    return config


def newest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint in `run_dir/checkpoints` with the most optimizer steps (the newest file on a tie)."""
    candidates = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume: no checkpoints in {run_dir / CHECKPOINT_DIR}")
    steps = {}
    for path in candidates:
        try:
            steps[path] = read_checkpoint(path).get("global_step", -1)
        except CheckpointError as error:  # e.g. a file some other tool truncated: resume from the others
            log.warning("skipping %s", error)
    if not steps:
        raise ConfigError(f"resume: no readable checkpoint in {run_dir / CHECKPOINT_DIR}")
    return max(reversed(list(steps)), key=steps.get)  # of equal steps, the newest file
