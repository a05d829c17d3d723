"""MNIST digits made to look like photos of paper: for measuring what the preprocessing buys, and for tests.

A digit is enlarged (x4 to x10), put off-centre on a larger page, drawn as dark ink on light paper under
lighting that changes across the page, with sensor noise; some are blurred, some saved as RGB JPEG.
"""

import io

import numpy as np
from PIL import Image, ImageFilter


def photo_of(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A photo-like image of one 28x28 uint8 MNIST digit (light ink on black)."""
    scale = int(rng.integers(4, 11))
    size = 28 * scale
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    height, width = size + int(rng.integers(20, 3 * size)), size + int(rng.integers(20, 3 * size))
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    ink = np.zeros((height, width), dtype=np.float32)
    ink[top : top + size, left : left + size] = np.clip(big, 0.0, 1.0)

    rows, cols = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    tilt_rows, tilt_cols = rng.uniform(-0.12, 0.12, size=2)
    paper = rng.uniform(0.7, 0.95) + tilt_rows * rows + tilt_cols * cols
    darkness = rng.uniform(0.6, 0.9)
    page = paper * (1.0 - darkness * ink) + rng.normal(0.0, 0.02, size=ink.shape)
    image = Image.fromarray((np.clip(page, 0.0, 1.0) * 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5)) * scale / 4))
    if rng.random() < 0.5:
        tint = Image.merge("RGB", [image.point(lambda value, k=k: int(value * k)) for k in rng.uniform(0.85, 1.0, 3)])
        buffer = io.BytesIO()
        tint.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
        buffer.seek(0)
        image = Image.open(buffer)
        image.load()
    return image
