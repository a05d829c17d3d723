"""The chapter's convolutional network, layer for layer, with its two kinds of convolution layer."""

import torch
from torch import nn

from mnist_cnn.errors import ConfigError


class SeparableConv2d(nn.Module):
    """The chapter's "single-channel" convolution layer (a depthwise-separable convolution).

    Each input channel is convolved with its own k x k filter (depthwise), then a 1 x 1 convolution mixes
    the channels into `out_channels` (pointwise). The pair equals a standard convolution whose kernel
    factorises as weight[o, c] = pointwise[o, c] * depthwise[c], with c_in*k*k + c_in*c_out + c_out
    parameters instead of c_out*c_in*k*k + c_out. One bias, at the end: a depthwise bias would fold into it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(images))


CONV_LAYERS: dict[str, type[nn.Module]] = {"standard": nn.Conv2d, "separable": SeparableConv2d}


class ConvolutionalMNISTClassifier(nn.Module):
    """The chapter's CNN: 28x28 grey image -> 10 class logits, 17,066 trainable parameters.

    The layers live in one `nn.Sequential` named `layers`, in the chapter's order, so that with
    `conv="standard"` the `state_dict` keys (`layers.0.weight`, ...) match the chapter's class and weights
    move between them. `conv="separable"` swaps every convolution for a `SeparableConv2d`.
    """

    def __init__(self, conv: str = "standard") -> None:
        super().__init__()
        if conv not in CONV_LAYERS:
            raise ConfigError(f"model.conv must be one of {', '.join(CONV_LAYERS)}; got {conv!r}")
        Conv = CONV_LAYERS[conv]
        self.layers = nn.Sequential(
            Conv(1, 4, kernel_size=3, padding=1),  # 1x28x28 -> 4x28x28
            nn.ReLU(),
            Conv(4, 8, kernel_size=3, padding=1),  # -> 8x28x28
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 8x14x14
            Conv(8, 8, kernel_size=5, padding=1),  # -> 8x12x12
            nn.ReLU(),
            Conv(8, 8, kernel_size=5, padding=1),  # -> 8x10x10
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 8x5x5
            nn.Flatten(),  # -> 200
            nn.Linear(200, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def kaiming_init(net: nn.Module) -> None:
    """He et al.'s starting weights for every convolution and linear layer: normal, fan-in, ReLU gain, zero bias.

    torch's default draws a layer's weights from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), a sixth of this variance,
    so without batch norm each layer shrinks its activations at the start.
    """
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
