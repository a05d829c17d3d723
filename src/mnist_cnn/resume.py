"""`resume=true`: continue a run in its own folder, with its own saved config, from its newest checkpoint."""

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.errors import ConfigError
from mnist_cnn.run_dir import CHECKPOINT_DIR

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
    overrides = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") != "resume"]
    refused = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUME_OVERRIDABLE]
    if refused:
        allowed = ", ".join(RESUME_OVERRIDABLE[1:])
        raise ConfigError(f"resume continues a run with its own config; it accepts only {allowed} (got {refused[0]})")
    original = OmegaConf.load(saved)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        OmegaConf.update(original, key, OmegaConf.select(cfg, key), force_add=True)
    original.resume = True
    return original


def newest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint in `run_dir/checkpoints` with the most optimizer steps (the newest file on a tie)."""
    candidates = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume: no checkpoints in {run_dir / CHECKPOINT_DIR}")
    steps = {
        path: torch.load(path, map_location="cpu", weights_only=True).get("global_step", -1) for path in candidates
    }
    return max(reversed(candidates), key=lambda path: steps[path])  # of equal steps, the newest file
