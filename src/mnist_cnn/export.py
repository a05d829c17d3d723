"""`mnist-cnn-export ckpt_path=... formats=[onnx,torchscript]`: a trained model in formats other programs run."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_cnn.errors import ConfigError, exit_on_user_error
from mnist_cnn.exporters import EXPORTERS, FORMATS
from mnist_cnn.runner import CONFIG_DIR
from mnist_cnn.trained import load_classifier


def export(cfg: DictConfig) -> dict[str, str]:
    """Each format in `cfg.formats`, into the run folder; return format -> path."""
    formats = [cfg.formats] if isinstance(cfg.formats, str) else list(cfg.formats or [])  # formats=onnx: one
    if not formats or set(formats) - EXPORTERS.keys():
        raise ConfigError(f"formats={formats}: choose from {sorted(EXPORTERS)}")
    module = load_classifier(cfg.ckpt_path, cfg.weights_path)
    folder = Path(cfg.paths.output_dir)
    written = {name: str(EXPORTERS[name](module, folder / FORMATS[name])) for name in formats}
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        export(cfg)


if __name__ == "__main__":
    main()
