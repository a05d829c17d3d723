import torch
from torch import nn

from mnist_cnn.cnn import ConvolutionalMNISTClassifier, count_parameters


class ChapterCNN(nn.Module):
    """A copy of the chapter's own class, as a reader of the chapter would have it."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(200, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


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
