"""The chapter's convolutional network, layer for layer."""

import torch
from torch import nn


class ConvolutionalMNISTClassifier(nn.Module):
    """The chapter's CNN: 28x28 grey image -> 10 class logits, 17,066 trainable parameters.

    The layers live in one `nn.Sequential` named `layers`, in the chapter's order, so that
    `state_dict` keys (`layers.0.weight`, ...) match the chapter's class and weights move between them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),  # 1x28x28 -> 4x28x28
            nn.ReLU(),
            nn.Conv2d(4, 8, kernel_size=3, padding=1),  # -> 8x28x28
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 8x14x14
            nn.Conv2d(8, 8, kernel_size=5, padding=1),  # -> 8x12x12
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=5, padding=1),  # -> 8x10x10
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 8x5x5
            nn.Flatten(),  # -> 200
            nn.Linear(200, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
