"""`mnist-cnn-predict ckpt_path=... inputs=...`: a trained model's digits for people's own images."""

from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.errors import ConfigError, exit_on_user_error
from mnist_cnn.image_files import ImageFilesDataModule
from mnist_cnn.prediction_writer import PredictionFiles
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.trained import classifier_from_checkpoint, classifier_from_weights


def load_model(cfg: DictConfig) -> MNISTClassifier:
    """The model that `ckpt_path` or `weights_path` names (exactly one of them)."""
    if bool(cfg.ckpt_path) == bool(cfg.weights_path):
        raise ConfigError("mnist-cnn-predict needs one of ckpt_path=<a .ckpt> or weights_path=<a .pth>")
    return classifier_from_checkpoint(cfg.ckpt_path) if cfg.ckpt_path else classifier_from_weights(cfg.weights_path)


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Predict every image through Lightning's `trainer.predict`; return the rows of `predictions.csv`."""
    datamodule = ImageFilesDataModule(cfg.inputs, batch_size=cfg.batch_size)
    module = load_model(cfg)
    writer = PredictionFiles(cfg.paths.output_dir, shown=cfg.shown)
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False, enable_progress_bar=False)
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    return writer.rows


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        predict(cfg)


if __name__ == "__main__":
    main()
