"""MNIST-style preprocessing of people's images: synthetic photos of MNIST-format digits come back as the digit."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mnist_cnn.photo_like import photo_of
from mnist_cnn.preprocess import (
    NoDigitError,
    background_is_light,
    centre_by_mass,
    crop_to_ink,
    fit_box,
    normalise,
    preprocess,
    to_grey,
    to_mnist,
)


def mnist_digit() -> np.ndarray:
    """A 28x28 uint8 digit in MNIST's format: a slanted seven, scaled so its longer side is 20 px (anti-aliased),
    centred by its centre of mass. Drawn large, then put through those two steps of MNIST's recipe."""
    drawing = Image.new("L", (200, 200))
    ImageDraw.Draw(drawing).line([(40, 30), (160, 30), (90, 180)], fill=255, width=22)
    large = np.asarray(drawing, dtype=np.float32) / 255
    return (centre_by_mass(fit_box(crop_to_ink(large))) * 255).round().astype(np.uint8)


def distance(seen: np.ndarray, digit: np.ndarray) -> float:
    """Mean absolute pixel difference in [0, 1], at the best alignment within one pixel: the centre of mass of
    a re-photographed digit may round to the neighbouring pixel."""
    target = digit / 255.0
    shifted = (np.roll(seen, (rows, cols), axis=(0, 1)) for rows in (-1, 0, 1) for cols in (-1, 0, 1))
    return min(float(np.abs(candidate - target).mean()) for candidate in shifted)


def on_paper(digit: np.ndarray, scale: int = 8, offset: tuple[int, int] = (40, 150), size=(300, 420)) -> np.ndarray:
    """The digit enlarged, off-centre, dark ink on light paper whose lighting changes across the page."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BICUBIC), dtype=np.float32) / 255
    ink = np.zeros(size, dtype=np.float32)
    ink[offset[0] : offset[0] + big.shape[0], offset[1] : offset[1] + big.shape[1]] = big
    paper = 0.8 + 0.1 * np.linspace(-1, 1, size[1])[None, :]
    noise = np.random.default_rng(0).normal(0, 0.02, size)
    return np.clip(paper * (1 - 0.8 * ink) + noise, 0, 1)


def as_image(page: np.ndarray) -> Image.Image:
    return Image.fromarray((page * 255).astype(np.uint8))


def test_an_mnist_image_comes_back_as_it_is() -> None:
    digit = mnist_digit()
    assert np.abs(to_mnist(Image.fromarray(digit)) - digit / 255.0).mean() < 0.005  # not even shifted


def test_resizing_a_photo_whole_is_far_from_the_digit() -> None:  # what the tests below tell apart
    digit = mnist_digit()
    whole = np.asarray(Image.fromarray(255 - (on_paper(digit) * 255).astype(np.uint8)).resize((28, 28)), np.float32)
    assert distance(whole / 255.0, digit) > 0.15


@pytest.mark.parametrize(
    "make",
    [
        lambda page: as_image(page),  # large, off-centre, dark on light, uneven lighting, noise
        lambda page: as_image(page).convert("RGB"),
        lambda page: as_image(page).filter(ImageFilter.GaussianBlur(2)),
        lambda page: _jpeg(as_image(page).convert("RGB")),
        lambda page: as_image(1 - page),  # light ink on a dark page, as MNIST is, but large and off-centre
    ],
    ids=["grey", "rgb", "blurred", "jpeg", "light-on-dark"],
)
def test_a_photo_of_a_digit_comes_back_close_to_the_digit(make) -> None:
    digit = mnist_digit()
    assert distance(to_mnist(make(on_paper(digit))), digit) < 0.035


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    buffer.seek(0)
    return Image.open(buffer)


def test_a_transparent_drawing_counts_as_ink_on_white_paper() -> None:
    digit = mnist_digit()
    rgba = np.zeros((28 * 6, 28 * 6, 4), dtype=np.uint8)  # black strokes, transparent elsewhere (a canvas export)
    rgba[..., 3] = np.asarray(Image.fromarray(digit).resize((28 * 6, 28 * 6), Image.BICUBIC))
    seen = to_mnist(Image.fromarray(rgba, mode="RGBA"))
    assert distance(seen, digit) < 0.035


def test_a_phone_photo_stored_sideways_is_read_upright(tmp_path) -> None:
    page = as_image(on_paper(mnist_digit()))
    sideways = page.transpose(Image.Transpose.ROTATE_90)  # the pixels as a phone stores them...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the EXIF Orientation tag that says: turn 90 degrees clockwise to view
    sideways.save(tmp_path / "photo.png", exif=exif)
    with Image.open(tmp_path / "photo.png") as photo:
        assert np.array_equal(to_mnist(photo), to_mnist(page))


def test_a_corrupt_exif_block_leaves_the_pixels_as_stored(tmp_path) -> None:
    page = as_image(on_paper(mnist_digit()))
    page.save(tmp_path / "photo.png", exif=b"not a TIFF header")
    with Image.open(tmp_path / "photo.png") as photo:
        assert np.array_equal(to_mnist(photo), to_mnist(page))


@pytest.mark.parametrize(
    ("mode", "scale"),
    [("I;16", 257), ("I", 257), ("I", 1), ("F", 1 / 255), ("F", 1)],
    ids=["16-bit", "32-bit-holding-16", "32-bit-holding-8", "float-0-1", "float-0-255"],
)
def test_deep_greys_are_scaled_not_clipped(mode: str, scale: float) -> None:
    page = (on_paper(mnist_digit()) * 255).round()
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    deep = Image.frombytes(mode, (page.shape[1], page.shape[0]), (page * scale).astype(dtype).tobytes())
    assert deep.mode == mode
    assert np.abs(to_mnist(deep) - to_mnist(Image.fromarray(page.astype(np.uint8)))).max() < 0.01


@pytest.mark.parametrize("side", [1000, 4000])
def test_a_small_digit_on_a_large_page_is_found(side: int) -> None:
    digit = mnist_digit()
    page = Image.new("L", (side, side), 255)  # the digit a nineteenth of the page high, as on a phone photo
    page.paste(Image.fromarray(255 - digit).resize((side // 19, side // 19), Image.BICUBIC), (side // 3, side // 2))
    assert distance(to_mnist(page), digit) < 0.075  # blurrier than above: about 10 px high once shrunk to 192


def test_polarity_is_read_from_the_border() -> None:
    page = on_paper(mnist_digit())
    assert background_is_light(to_grey(as_image(page)))
    assert not background_is_light(to_grey(as_image(1 - page)))


def test_the_result_is_the_training_normalisation_of_28x28() -> None:
    tensor = preprocess(as_image(on_paper(mnist_digit())))
    assert tensor.shape == (1, 28, 28) and tensor.min() >= -1 and tensor.max() <= 1
    assert float(tensor.max()) == pytest.approx(1.0)  # the strokes reach full ink, as MNIST's do
    assert normalise(np.zeros((28, 28), np.float32)).eq(-1).all()  # black is -1 after Normalize(0.5, 0.5)


@pytest.mark.parametrize(("level", "noise"), [(0.0, 0.01), (0.5, 0.01), (1.0, 0.01), (0.9, 0.0), (0.0, 0.0)])
def test_a_blank_page_has_no_digit(level: float, noise: float) -> None:
    page = np.full((200, 300), level) + np.random.default_rng(1).normal(0, noise, (200, 300))
    with pytest.raises(NoDigitError, match="no ink found"):
        to_mnist(as_image(np.clip(page, 0, 1)))


def test_photo_like_digits_of_real_shape_come_back_close() -> None:
    rng = np.random.default_rng(3)
    digit = mnist_digit()
    distances = [distance(to_mnist(photo_of(digit, rng)), digit) for _ in range(10)]
    assert max(distances) < 0.05, distances


def test_the_digit_is_centred_by_its_centre_of_mass_not_by_its_box() -> None:
    patch = np.zeros((20, 12), dtype=np.float32)
    patch[:4, :] = 1.0  # a heavy top bar and a thin stem: the mass sits far above the box's middle
    patch[4:, 5:7] = 1.0
    canvas = centre_by_mass(patch)
    rows, cols = np.indices(canvas.shape)
    centre = ((rows * canvas).sum() / canvas.sum(), (cols * canvas).sum() / canvas.sum())
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5
    top = int(np.nonzero(canvas.any(axis=1))[0][0])
    assert top > (28 - 20) // 2 + 2  # pushed down: centring the box would have put its top at row 4
