import pytest
import torch
from helpers import ChapterCNN
from torch import nn

from mnist_cnn.cnn import ConvolutionalMNISTClassifier, SeparableConv2d, count_parameters
from mnist_cnn.errors import ConfigError
from mnist_cnn.mlp import MLP


def test_output_shape_is_batch_by_ten_logits() -> None:
    assert ConvolutionalMNISTClassifier()(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_parameter_count_is_17066() -> None:
    # conv 40 + 296 + 1,608 + 1,608, linear 12,864 + 650
    assert count_parameters(ConvolutionalMNISTClassifier()) == 17_066


def test_state_dict_moves_both_ways_with_the_chapters_class() -> None:
    ours, chapters = ConvolutionalMNISTClassifier(), ChapterCNN()
    assert list(ours.state_dict()) == list(chapters.state_dict())
    assert list(ours.state_dict())[:2] == ["layers.0.weight", "layers.0.bias"]
    chapters.load_state_dict(ours.state_dict())  # strict: same names and shapes
    images = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(chapters(images), ours(images))
    ours.load_state_dict(ChapterCNN().state_dict())


def test_separable_layer_equals_a_standard_conv_with_a_factorised_kernel() -> None:
    torch.manual_seed(0)
    separable = SeparableConv2d(3, 5, kernel_size=3, padding=1)
    depthwise = separable.depthwise.weight[:, 0]  # c_in x k x k: one filter per input channel
    pointwise = separable.pointwise.weight[:, :, 0, 0]  # c_out x c_in: the 1 x 1 mix
    standard = nn.Conv2d(3, 5, kernel_size=3, padding=1)
    with torch.no_grad():
        standard.weight.copy_(pointwise[:, :, None, None] * depthwise[None])
        standard.bias.copy_(separable.pointwise.bias)
    images = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(separable(images), standard(images))


def test_separable_layer_has_fewer_parameters() -> None:
    c_in, c_out, k = 8, 8, 5
    assert count_parameters(SeparableConv2d(c_in, c_out, k)) == c_in * k * k + c_in * c_out + c_out  # 272
    assert count_parameters(nn.Conv2d(c_in, c_out, k)) == c_out * c_in * k * k + c_out  # 1,608


def test_separable_cnn_keeps_the_shapes_and_has_14151_parameters() -> None:
    net = ConvolutionalMNISTClassifier(conv="separable")
    assert net(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
    assert count_parameters(net) == 14_151


def test_mlp_default_is_the_chapters_784_50_10() -> None:
    mlp = MLP()
    assert count_parameters(mlp) == 784 * 50 + 50 + 50 * 10 + 10 == 39_760
    assert mlp(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert count_parameters(MLP(hidden_sizes=[128, 64])) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConvolutionalMNISTClassifier(conv="dilated"), "model.conv must be one of standard, separable"),
        (lambda: MLP(hidden_sizes=[50, 0]), "model.hidden_sizes must be positive integers"),
    ],
)
def test_bad_model_options(build, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()
