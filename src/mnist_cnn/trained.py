"""A trained classifier, from a training checkpoint or from the exported weights of the chapter's CNN."""

from pathlib import Path

import torch

from mnist_cnn.checkpoint import check_matches, read_checkpoint
from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.datamodule import CLASS_NAMES
from mnist_cnn.errors import CheckpointError, ConfigError, first_line


def classifier_from_checkpoint(path: str | Path) -> MNISTClassifier:
    """The trained module of a checkpoint written by `mnist-cnn-train`, rebuilt from the checkpoint's own config."""
    checkpoint = read_checkpoint(path)
    module = MNISTClassifier(**checkpoint["hyper_parameters"])
    check_matches(checkpoint, module, path)
    module.load_state_dict(checkpoint["state_dict"])
    dataset = (checkpoint.get("datamodule_hyper_parameters") or {}).get("dataset", "MNIST")
    module.class_names = CLASS_NAMES.get(dataset, module.class_names)
    return module


CHAPTER_CNN = {"_target_": "mnist_cnn.cnn.ConvolutionalMNISTClassifier"}


def classifier_from_weights(path: str | Path) -> MNISTClassifier:
    """The chapter CNN with the weights of an exported `mnist_classifier.pth` (a state_dict of that network)."""
    module = MNISTClassifier(net=CHAPTER_CNN, optimizer={"_target_": "torch.optim.Adam"})
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
        module.net.load_state_dict(weights)
    except FileNotFoundError as error:
        raise CheckpointError(f"weights {path} do not exist") from error
    except Exception as error:  # not a state_dict, or another network's
        raise CheckpointError(f"{path} is not an exported chapter-CNN state_dict ({first_line(error)})") from error
    return module


def load_classifier(ckpt_path: str | None, weights_path: str | None) -> MNISTClassifier:
    """The model that `ckpt_path` (any model option) or `weights_path` (the chapter CNN's .pth) names: one of them."""
    if bool(ckpt_path) == bool(weights_path):
        raise ConfigError("give one of ckpt_path=<a .ckpt from mnist-cnn-train> or weights_path=<its .pth>")
    return classifier_from_checkpoint(ckpt_path) if ckpt_path else classifier_from_weights(weights_path)
