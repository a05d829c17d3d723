"""The debug presets and the git-ignored local config: what they set, and that they run."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config, metrics_of
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.train import train

DEBUG = {
    "default": {"trainer.max_epochs": 1, "trainer.detect_anomaly": True, "trainer.deterministic": True},
    "fast": {"trainer.limit_train_batches": 5, "trainer.limit_test_batches": 2, "callbacks.periodic_checkpoint": None},
    "overfit": {"trainer.overfit_batches": 3, "trainer.max_epochs": 50, "data.augmentation": None},
    "profiler": {"trainer.profiler": "simple", "trainer.limit_train_batches": 100},
}


@pytest.mark.parametrize("config", ["train", "eval"])
@pytest.mark.parametrize("option", sorted(DEBUG))
def test_each_debug_preset_sets_what_it_says(option: str, config: str, tmp_path: Path) -> None:
    cfg = compose_config(config, f"debug={option}", f"paths.output_dir={tmp_path}")
    for key, value in DEBUG[option].items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1


def test_debug_fast_runs_end_to_end_and_writes_only_the_checkpoints_a_run_needs(
    mnist_root: Path, tmp_path: Path
) -> None:
    overrides = ["debug=fast", f"paths.data_dir={mnist_root}", f"paths.output_dir={tmp_path}", "data.download=false"]
    cfg = compose_config("train", *overrides, "data.val_size=40", "data.batch_size=16")
    with torch.random.fork_rng(devices=[]):
        train(cfg)
    metrics = metrics_of(tmp_path)
    assert metrics["epochs"] == 1 and "test_acc" in metrics
    written = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert written == sorted([Path(metrics["checkpoint"]).name, "last.ckpt"])


def test_debug_overfit_trains_on_the_same_batches_every_epoch(mnist_root: Path, tmp_path: Path) -> None:
    from mnist_cnn.tensor_datamodule import MNISTTensorDataModule

    data = MNISTTensorDataModule(mnist_root, batch_size=16, val_size=40, download=False)
    data.setup("fit")

    class Overfitting:  # what the data module asks of its trainer
        overfit_batches = 3
        strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()

    data.trainer = Overfitting()
    first, again = ([list(batch) for batch in data.train_dataloader().batch_sampler] for _ in range(2))
    assert first == again and first[0] == list(range(16))


def test_a_local_config_applies_to_every_command(tmp_path: Path) -> None:
    conf = Path(shutil.copytree(CONFIG_DIR, tmp_path / "conf"))
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  data_dir: /srv/mnist\n")
    for config in ("train", "eval"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config, overrides=[f"paths.output_dir={tmp_path}"])
        assert cfg.data.data_dir == "/srv/mnist", config
    assert "/conf/local/*.yaml" in (Path(CONFIG_DIR).parent / ".gitignore").read_text()


@pytest.mark.parametrize("data", ["mnist", "mnist_pil"])
def test_one_augmentation_key_turns_augmentation_off_on_either_data_path(data: str, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config("train", f"data={data}", "data.augmentation=null", f"paths.output_dir={tmp_path}")
    datamodule = instantiate(cfg.data)
    assert not datamodule.augmentation  # None on the tensor path, an empty list of transforms on the PIL path
