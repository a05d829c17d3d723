"""The chapter's baseline: a fully connected network on the flattened image."""

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from mnist_cnn.errors import ConfigError
from mnist_cnn.images import IMAGE_SIZE, NUM_CLASSES


class MLP(nn.Module):
    """784 -> hidden sizes (ReLU after each) -> 10. The default, one hidden layer of 50, has 39,760 parameters."""

    def __init__(self, hidden_sizes: Sequence[int] = (50,)) -> None:
        super().__init__()
        if not all(isinstance(size, int) and size > 0 for size in hidden_sizes):
            raise ConfigError(f"model.hidden_sizes must be positive integers, got {list(hidden_sizes)}")
        sizes = [IMAGE_SIZE * IMAGE_SIZE, *hidden_sizes]
        layers: list[nn.Module] = [nn.Flatten()]
        for inputs, outputs in pairwise(sizes):
            layers += [nn.Linear(inputs, outputs), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], NUM_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
