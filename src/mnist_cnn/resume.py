"""`resume=true`: continue a run in its own folder, with its own saved config, from its newest checkpoint."""

import logging
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.checkpoint import read_checkpoint
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.run_dir import CHECKPOINT_DIR
from mnist_cnn.run_record import RESOLVED_CONFIG
from mnist_cnn.sweep import override_key

log = logging.getLogger(__name__)

# What a resumed run may change: how long it trains, where data lives, which hardware and how it reports.
RESUME_OVERRIDABLE = (
    "resume",
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "paths.data_dir",
    "callbacks.progress_bar.refresh_rate",
)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The run's first config (from `.hydra/config.yaml`), with this command's allowed overrides applied."""
    run_dir = Path(cfg.paths.output_dir)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume: {run_dir} has no saved config ({saved})")
    overrides = {override_key(o): o for o in HydraConfig.get().overrides.task if override_key(o) != "resume"}
    refused = [override for key, override in overrides.items() if key not in RESUME_OVERRIDABLE]
    if refused:
        allowed = ", ".join(RESUME_OVERRIDABLE[1:])
        raise ConfigError(f"resume continues a run with its own config; it accepts only {allowed} (got {refused[0]})")
    original = OmegaConf.load(saved)
    resolved = saved.with_name(RESOLVED_CONFIG)
    if resolved.is_file():  # as this run used them: a multirun job's seed and TensorBoard run are its own
        used = OmegaConf.load(resolved)
        original.seed = used.seed
        if OmegaConf.select(original, "logger.tensorboard"):
            original.logger.tensorboard.version = used.logger.tensorboard.version
    if OmegaConf.select(original, "callbacks.optuna_pruning"):  # a resumed trial reports to no study
        original.callbacks.optuna_pruning = None
    for key in overrides:
        OmegaConf.update(original, key, OmegaConf.select(cfg, key), force_add=True)
    if OmegaConf.select(original, "logger.csv"):  # Lightning's CSVLogger would delete the earlier metrics.csv
        original.logger.csv.version = f"resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    original.resume = True
    log.info("resuming %s", run_dir)
    return original


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
