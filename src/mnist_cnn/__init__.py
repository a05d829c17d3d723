"""mnist-cnn: the textbook chapter's convolutional MNIST classifier as a Lightning + Hydra project."""

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.datamodule import MNISTDataModule

__all__ = ["ConvolutionalMNISTClassifier", "MNISTClassifier", "MNISTDataModule"]
