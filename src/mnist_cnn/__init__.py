"""mnist-cnn: the textbook chapter's convolutional MNIST classifier as a Lightning + Hydra project."""

from mnist_cnn.classifier import MNISTClassifier
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.run_dir import register_resolvers as register_folder_resolvers
from mnist_cnn.schema import register_schemas
from mnist_cnn.sweep import register_resolvers as register_sweep_resolvers


def register_with_hydra() -> None:
    """What Hydra needs before it composes one of our configs: the typed schemas, and our resolvers (run and
    sweep folders; a multirun job's seed, threads and TensorBoard name). Safe to call again."""
    register_schemas()
    register_folder_resolvers()
    register_sweep_resolvers()


# The one import-time side effect: every entry point, notebook and test composes configs through this package.
register_with_hydra()

__all__ = ["ConvolutionalMNISTClassifier", "MNISTClassifier", "MNISTDataModule", "register_with_hydra"]
