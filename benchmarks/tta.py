"""Test-time augmentation: does averaging a model's predictions over shifted or rotated copies help?

    python benchmarks/tta.py --data-dir ../shared/data --ckpt <run>/checkpoints/<best>.ckpt [--ckpt ...]

For each checkpoint, the MNIST test accuracy of the model alone, and of its class probabilities averaged over
the image and copies of it shifted by one pixel (4 neighbours), rotated by +-5 and +-10 degrees, or both
(`mnist_cnn.augment`'s transforms: nearest pixels, black fill). Reported apart from the headline numbers,
which are without it: each copy costs a full forward pass at test time.
"""

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from mnist_cnn.augment import affine_matrices, normalize, sampling_grid, to_unit_float
from mnist_cnn.idx import load_split
from mnist_cnn.trained import classifier_from_checkpoint

SHIFTS = [(1, 0), (-1, 0), (0, 1), (0, -1)]  # pixels (x, y)
ANGLES = [-10.0, -5.0, 5.0, 10.0]  # degrees


def moved(pixels: torch.Tensor, angle: float = 0.0, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """[0, 1] images rotated by `angle` degrees and shifted by `shift` pixels."""
    count, side = len(pixels), pixels.shape[-1]
    shifts = torch.tensor(shift, dtype=pixels.dtype).mul(2 / side).expand(count, 2)
    theta = affine_matrices(
        torch.full((count,), angle), torch.zeros(count, dtype=torch.bool), torch.ones(count), shifts
    )
    return F.grid_sample(pixels, sampling_grid(theta, side, side), mode="nearest", align_corners=False)


VIEWS: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {
    "none": [],
    "4 one-pixel shifts": [lambda x, s=s: moved(x, shift=s) for s in SHIFTS],
    "4 rotations (+-5, +-10 degrees)": [lambda x, a=a: moved(x, angle=a) for a in ANGLES],
    "both (9 copies)": [lambda x, s=s: moved(x, shift=s) for s in SHIFTS]
    + [lambda x, a=a: moved(x, angle=a) for a in ANGLES],
}


@torch.inference_mode()
def accuracy(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, views: list[Callable]) -> float:
    correct = 0
    for batch, truth in zip(pixels.split(1000), labels.split(1000), strict=True):
        copies = [batch] + [view(batch) for view in views]
        probabilities = sum(model(normalize(copy.clone())).softmax(dim=1) for copy in copies)
        correct += int((probabilities.argmax(dim=1) == truth).sum())
    return correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True, help="a checkpoint of mnist-cnn-train (repeatable)")
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw/")
    args = parser.parse_args()
    images, labels = load_split(Path(args.data_dir) / "MNIST" / "raw", "test")
    pixels = to_unit_float(images.unsqueeze(1))
    results = {name: [] for name in VIEWS}
    for path in args.ckpt:
        model = classifier_from_checkpoint(path).eval()
        for name, views in VIEWS.items():
            results[name].append(accuracy(model, pixels, labels, views))
    print(f"Test accuracy of {len(args.ckpt)} checkpoint(s), mean ± sd (lowest):\n")
    print("| test-time augmentation | test accuracy |\n|---|---|")
    for name, accs in results.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.fmean(accs):.2%} ± {spread:.2%} ({min(accs):.2%}) |")


if __name__ == "__main__":
    main()
