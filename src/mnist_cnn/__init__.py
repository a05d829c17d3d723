"""mnist-cnn: the textbook chapter's convolutional MNIST classifier as a Lightning + Hydra project."""

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.schema import register_schemas

# Typed config groups (conf/<group>/<option>.yaml extend them): done on import, before Hydra composes.
register_schemas()

__all__ = ["ConvolutionalMNISTClassifier", "MNISTClassifier", "MNISTDataModule"]
