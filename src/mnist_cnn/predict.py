"""`mnist-cnn-predict ckpt_path=... inputs=...`: a trained model's digits for people's own images."""

from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_cnn.errors import CheckpointError, ConfigError, exit_on_user_error, first_line, is_integer
from mnist_cnn.image_files import ImageFilesDataModule
from mnist_cnn.images import DIGITS
from mnist_cnn.prediction_writer import PredictionFiles, describe_batch, write_predictions
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.trained import load_classifier


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Predict every image; return the rows of `predictions.csv`.

    With `ckpt_path` or `weights_path`, through Lightning's `trainer.predict`; with `onnx_path`, the exported
    model in onnxruntime alone (the deployment path), on the same preprocessed images.
    """
    if sum(bool(cfg[key]) for key in ("ckpt_path", "weights_path", "onnx_path")) != 1:
        raise ConfigError(
            "mnist-cnn-predict needs one model: ckpt_path=<.ckpt>, weights_path=<.pth> or onnx_path=<.onnx>"
        )
    if not (is_integer(cfg.shown) and cfg.shown >= 0):
        raise ConfigError(f"shown, the rows printed, must be an integer >= 0, got {cfg.shown!r}")
    datamodule = ImageFilesDataModule(cfg.inputs, batch_size=cfg.batch_size)
    if cfg.onnx_path:
        return predict_with_onnx(cfg.onnx_path, datamodule, Path(cfg.paths.output_dir), cfg.shown)
    module = load_classifier(cfg.ckpt_path, cfg.weights_path)
    writer = PredictionFiles(cfg.paths.output_dir, shown=cfg.shown)
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False, enable_progress_bar=False)
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    return writer.rows


def predict_with_onnx(
    onnx_path: str, datamodule: ImageFilesDataModule, output_dir: Path, shown: int
) -> list[dict[str, Any]]:
    session = onnx_session(onnx_path)
    names = session.get_modelmeta().custom_metadata_map.get("classes", ",".join(DIGITS)).split(",")
    rows, digits = [], []
    for batch in datamodule.predict_dataloader():
        (logits,) = session.run(None, {session.get_inputs()[0].name: batch["image"].numpy()})
        probabilities = torch.from_numpy(logits).softmax(dim=1)
        rows += describe_batch(batch, probabilities, names)
        digits += list(batch["digit"])
    write_predictions(rows, digits, output_dir, shown)
    return rows


def onnx_session(path: str) -> Any:
    try:
        import onnxruntime  # a deployment dependency: the training install does not need it
    except ImportError as error:
        raise ConfigError("onnx_path needs onnxruntime: pip install onnxruntime") from error
    if not Path(path).is_file():
        raise CheckpointError(f"ONNX model {path} does not exist")
    try:
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own error types for a file it cannot load
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load ({first_line(error)})") from error


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        predict(cfg)


if __name__ == "__main__":
    main()
