"""What each step of the MNIST-style preprocessing buys on photo-like digits, for one trained model.

    python benchmarks/photo_digits.py --ckpt outputs/<date>/<time>/checkpoints/last.ckpt --data-dir ../shared/data

Makes `--count` photo-like images from the MNIST **test** set (`mnist_cnn.photo_like`: enlarged, off-centre,
dark ink on light, unevenly lit paper, noise, some blurred, some RGB JPEG; seeded), then measures the model's
accuracy with the preprocessing built up step by step, from "resize the whole image to 28x28" to the full
recipe (`mnist_cnn.preprocess.to_mnist`), beside its accuracy on the same digits as MNIST has them.
Prints a Markdown table and writes it with the raw numbers under --out.
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from results import save_results
from torchvision.datasets import MNIST

from mnist_cnn import preprocess as steps
from mnist_cnn.images import IMAGE_SIZE
from mnist_cnn.photo_like import photo_of
from mnist_cnn.trained import classifier_from_checkpoint


def resize_whole(grey: np.ndarray) -> np.ndarray:
    image = Image.fromarray(grey.astype(np.float32), mode="F").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.clip(np.asarray(image), 0.0, 1.0)


def light_ink(image: Image.Image) -> np.ndarray:
    grey = steps.to_grey(image)
    return 1.0 - grey if steps.background_is_light(grey) else grey


def boxed_in_the_middle(digit: np.ndarray) -> np.ndarray:
    """The 20-px digit pasted at the canvas's centre by its box (not by its centre of mass)."""
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    top, left = (IMAGE_SIZE - digit.shape[0]) // 2, (IMAGE_SIZE - digit.shape[1]) // 2
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


VARIANTS: dict[str, Callable[[Image.Image], np.ndarray]] = {
    "resize the whole image to 28x28 (grey)": lambda image: resize_whole(steps.to_grey(image)),
    "+ polarity (invert light paper)": lambda image: resize_whole(light_ink(image)),
    "+ background and lighting removed": lambda image: resize_whole(steps.remove_background(light_ink(image))),
    "+ crop to the ink, longer side 20 px": lambda image: boxed_in_the_middle(
        steps.fit_box(steps.crop_to_ink(steps.remove_background(light_ink(image))))
    ),
    "+ centred by centre of mass (the full recipe)": steps.to_mnist,
}


@torch.no_grad()
def accuracy(model: torch.nn.Module, digits: list[np.ndarray], labels: np.ndarray) -> float:
    inputs = torch.stack([steps.normalise(digit) for digit in digits])
    predictions = torch.cat([model(batch).argmax(dim=1) for batch in inputs.split(500)])
    return float((predictions.numpy() == labels).mean())


def safely(variant: Callable[[Image.Image], np.ndarray], image: Image.Image) -> np.ndarray:
    try:
        return variant(image)
    except steps.NoDigitError:  # counts as wrong: a blank input
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by mnist-cnn-train")
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw/")
    parser.add_argument("--count", type=int, default=2000, help="test digits used (the first ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    args = parser.parse_args()

    test = MNIST(args.data_dir, train=False, download=False)
    count = min(args.count, len(test))
    originals, labels = test.data[:count].numpy(), test.targets[:count].numpy()
    rng = np.random.default_rng(args.seed)
    photos = [photo_of(digit, rng) for digit in originals]
    model = classifier_from_checkpoint(args.ckpt).eval()

    results = {"MNIST's own 28x28 images (reference)": accuracy(model, list(originals / 255.0), labels)}
    for name, variant in VARIANTS.items():
        results[name] = accuracy(model, [safely(variant, photo) for photo in photos], labels)
        print(f"{name}: {results[name]:.4f}", flush=True)

    lines = [f"{count} photo-like MNIST test digits (seed {args.seed}), model {args.ckpt}", ""]
    lines += ["| preprocessing | accuracy |", "|---|---|"]
    lines += [f"| {name} | {value:.2%} |" for name, value in results.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    out = save_results(args, "photo_digits", table, accuracy=results)
    sample = Image.new("L", (IMAGE_SIZE * 8, IMAGE_SIZE * 2))
    for index in range(8):  # a strip: photos (shrunk) above, what the model saw below
        sample.paste(photos[index].convert("L").resize((IMAGE_SIZE, IMAGE_SIZE)), (index * IMAGE_SIZE, 0))
        seen = (safely(steps.to_mnist, photos[index]) * 255).astype(np.uint8)
        sample.paste(Image.fromarray(seen), (index * IMAGE_SIZE, IMAGE_SIZE))
    sample.resize((sample.width * 3, sample.height * 3), Image.NEAREST).save(out / "examples.png")


if __name__ == "__main__":
    main()
