"""A photo, scan or drawing of one digit, made into what the model saw in training: MNIST's own recipe.

MNIST's description of how it was made (LeCun, Cortes and Burges): NIST's black-and-white digits were
size-normalised to fit a 20x20 box keeping their aspect ratio (the anti-aliasing of that resize gives the grey
levels), then centred in a 28x28 image by their centre of mass. Its images are light ink on a black background.
A photo of paper differs in every one of those respects, so each step below undoes one of them:

1. grey: the image as a viewer shows it (turned by a phone's EXIF orientation), colour to luminance, a
   transparent background as paper (white), 16-bit, 32-bit and float greys scaled to 8 bits, not clipped.
2. polarity: the border is background; where it is light (paper), invert, so the ink is the light part.
3. background: uneven lighting and the paper's own level are a smooth surface under the ink, fitted to the
   pixels Otsu's threshold calls background and subtracted. The rest is stretched so the strokes reach 1; what
   is below a share of Otsu's ink threshold is noise, set to 0.
4. crop to the ink's bounding box (outer rows and columns with next to no ink, such as specks, do not count).
5. scale the longer side to 20 px, keeping the aspect ratio, with an anti-aliasing (Lanczos) filter.
6. paste into 28x28 so the ink's centre of mass is at the centre.
7. the training normalisation, (x - 0.5) / 0.5 (`mnist_cnn.images`).
"""

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_cnn.errors import UserError
from mnist_cnn.images import IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD

DIGIT_BOX = 20  # MNIST's size-normalisation box, pixels
WORK_SIZE = 192  # larger images are first shrunk to this longer side: the result is 20 px anyway
BORDER = 0.06  # the border strip, as a share of the side, that says what the background is
MIN_CONTRAST = 0.08  # ink must stand out from the background by this much of the full grey range
INK_PIXELS = 12  # ... in at least this many pixels: a digit a twentieth of the page high, shrunk to WORK_SIZE
SPECKS = 0.003  # outer rows and columns holding less than this share of the ink are cropped off
ORIENTATION_TAG = 0x0112  # EXIF's
NOISE = 0.3  # what is below this share of Otsu's ink threshold, after the background is gone, is noise


NO_INK = "no ink found: the image is blank, or the digit does not stand out from its background"


class NoDigitError(UserError):
    """An image with nothing that stands out from its background (a blank page)."""


def to_mnist(image: Image.Image) -> np.ndarray:
    """Steps 1-6: a 28x28 float array in [0, 1], light ink on black, as MNIST's images are."""
    grey = to_grey(image)
    if background_is_light(grey):
        grey = 1.0 - grey
    ink = remove_background(grey)
    return centre_by_mass(fit_box(crop_to_ink(ink)))


def normalise(digit: np.ndarray) -> torch.Tensor:
    """Step 7: a (1, 28, 28) tensor as the model's input."""
    return ((torch.from_numpy(digit).float() - PIXEL_MEAN) / PIXEL_STD).unsqueeze(0)


def preprocess(image: Image.Image) -> torch.Tensor:
    """Any image of one digit to the model's (1, 28, 28) input."""
    return normalise(to_mnist(image))


def upright_grey(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it, in 8-bit grey ("L"): step 1 before the shrink."""
    image = _upright(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    if image.mode.startswith("I") or image.mode == "F":  # Pillow's convert("L") would clip these to 0 and 255
        return _to_8_bits(image)
    return image.convert("L")


def _upright(image: Image.Image) -> Image.Image:
    """Turned as its EXIF orientation tag says (a phone stores its photos sideways, with such a tag)."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block (Pillow raises SyntaxError, ValueError, ...): the pixels as stored
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _to_8_bits(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float grey in 0..255: divided by the range its values were stored in (16-bit files
    by 65,535; other integer or float ones by the least of 1, 255, 65,535 and 2^32 - 1 that holds them)."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32))
    peak = float(values.max(initial=0.0))
    ranges = (1.0, 255.0, 65535.0, 2.0**32 - 1)
    top = ranges[2] if image.mode.startswith("I;16") else next((t for t in ranges if peak <= t), ranges[-1])
    return Image.fromarray(np.clip(values / top * 255.0, 0.0, 255.0).round().astype(np.uint8))


def to_grey(image: Image.Image) -> np.ndarray:
    """Step 1: grey values in [0, 1], at most WORK_SIZE on a side."""
    grey = upright_grey(image)
    scale = WORK_SIZE / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.BOX)
    return np.asarray(grey, dtype=np.float32) / 255.0


def background_is_light(grey: np.ndarray) -> bool:
    height, width = grey.shape
    strip = max(1, round(BORDER * min(height, width)))
    border = np.concatenate(
        [grey[:strip].ravel(), grey[-strip:].ravel(), grey[:, :strip].ravel(), grey[:, -strip:].ravel()]
    )
    return float(np.median(border)) > 0.5


def remove_background(ink_light: np.ndarray) -> np.ndarray:
    """Light ink on a dark, maybe unevenly lit background: the ink alone, in [0, 1].

    The background is a smooth surface (a quadratic in x and y) fitted to the pixels that Otsu's threshold
    calls background, then subtracted: lighting that changes across a page, and the paper's own grey.
    """
    ordered = np.sort(ink_light, axis=None)
    low, high = ordered[len(ordered) // 1000], ordered[-min(INK_PIXELS, len(ordered))]
    if high - low < MIN_CONTRAST:
        raise NoDigitError(NO_INK)
    threshold = _otsu(ink_light)
    rows, cols = np.indices(ink_light.shape, dtype=np.float32)
    rows, cols = rows / ink_light.shape[0] - 0.5, cols / ink_light.shape[1] - 0.5
    terms = np.stack([np.ones_like(rows), rows, cols, rows * rows, cols * cols, rows * cols], axis=-1)
    background = ink_light < threshold
    if background.sum() >= terms.shape[-1]:
        coefficients, *_ = np.linalg.lstsq(terms[background], ink_light[background], rcond=None)
        ink_light = ink_light - terms @ coefficients
    ink = np.clip(ink_light, 0.0, None)
    strokes = ink[ink >= 0.5 * float(ink.max())]
    strongest = float(np.percentile(strokes, 90)) if strokes.size else 0.0
    if strongest < MIN_CONTRAST:
        raise NoDigitError(NO_INK)
    ink = np.clip(ink / strongest, 0.0, 1.0)
    ink[ink < NOISE * _otsu(ink)] = 0.0
    return ink


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold: the grey level that best splits the values into two classes."""
    counts, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between[:-1], nan=-1.0)  # a level with every value on one side splits nothing
    return float(centres[int(np.argmax(between))])


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box, without the outer rows and columns that hold next to none of it (specks)."""
    rows, cols = _span(ink.sum(axis=1)), _span(ink.sum(axis=0))
    return ink[rows, cols]


def _span(mass: np.ndarray) -> slice:
    """From the first to the last index whose outside holds at least SPECKS of the total mass."""
    share = np.cumsum(mass) / mass.sum()
    first = int(np.searchsorted(share, SPECKS, side="right"))
    last = int(np.searchsorted(share, 1.0 - SPECKS, side="left"))
    return slice(first, max(first, last) + 1)


def fit_box(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit, mode="F").resize(size, Image.LANCZOS)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    total = float(digit.sum()) or 1.0
    rows, cols = np.indices(digit.shape)
    centre_row, centre_col = float((rows * digit).sum()) / total, float((cols * digit).sum()) / total
    top = int(np.clip(round(IMAGE_SIZE / 2 - centre_row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(IMAGE_SIZE / 2 - centre_col), 0, IMAGE_SIZE - width))
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas
