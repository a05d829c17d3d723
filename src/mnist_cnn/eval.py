"""`mnist-cnn-eval ckpt_path=...`: test a trained checkpoint without training, write the run's results."""

from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from mnist_cnn.errors import ConfigError, exit_on_user_error
from mnist_cnn.metrics import class_names_of, test_results
from mnist_cnn.runner import CONFIG_DIR, build_datamodule, build_trainer, check_run_settings, write_results
from mnist_cnn.sweep import in_multirun, run_job
from mnist_cnn.trained import classifier_from_checkpoint


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the model from the checkpoint's own config, test it, export; return the metrics."""
    if not cfg.ckpt_path:
        raise ConfigError("mnist-cnn-eval needs ckpt_path=<a .ckpt file written by mnist-cnn-train>")
    check_run_settings(cfg, groups=("data", "trainer"))
    module = classifier_from_checkpoint(cfg.ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()

    trainer = build_trainer(cfg)
    (test_metrics,) = trainer.test(module, datamodule=datamodule)
    results = test_results(test_metrics, class_names_of(datamodule))
    return write_results(cfg, trainer, module, {**results, "checkpoint": str(cfg.ckpt_path)})


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> dict[str, Any]:
    """One evaluation; in a multirun (`-m`), one job of the sweep, whose failure does not end the sweep."""
    if in_multirun():
        return run_job(evaluate, cfg)
    with exit_on_user_error():
        return evaluate(cfg)


if __name__ == "__main__":
    main()
