"""The batched augmentation draws the PIL path's distribution per image, and matches torchvision's ops."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mnist_cnn.augment import RandomFlipRotate, flip_rotate
from mnist_cnn.errors import ConfigError

SIDE = 28


def asymmetric_images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(angle=st.floats(-10, 10), flip=st.booleans(), seed=st.integers(0, 2**16))
def test_one_image_equals_torchvision_flip_then_rotate(angle: float, flip: bool, seed: int) -> None:
    image = asymmetric_images(1, seed)
    ours = flip_rotate(image, torch.tensor([angle]), torch.tensor([flip]))[0]
    expected = TF.rotate(TF.hflip(image[0]) if flip else image[0], angle, interpolation=InterpolationMode.NEAREST)
    # Equal but for float rounding where a sampling point falls on a pixel border: about 1 angle in 3000
    # differs, in at most 2 of the 784 pixels (angle 2.3206512646284967 with seed 0, for one).
    mismatched = int((ours != expected).sum())
    assert mismatched <= 2, f"{mismatched} of {SIDE * SIDE} pixels differ"


@pytest.mark.parametrize("angle", [-10.0, -7.3, -2.0, 0.0, 3.0, 9.9])
def test_rotation_matches_the_pil_path(angle: float) -> None:
    """RandomRotation's PIL rotate (nearest, zero fill) gives the same pixels as our grid sample."""
    pixels = (asymmetric_images(1)[0, 0] * 255).to(torch.uint8)
    pil = Image.fromarray(pixels.numpy()).rotate(angle, resample=Image.NEAREST)
    ours = flip_rotate(pixels.float()[None, None], torch.tensor([angle]), torch.tensor([False]))[0, 0]
    mismatched = int((torch.from_numpy(np.array(pil)).float() != ours).sum())
    assert mismatched <= 2, f"{mismatched} of {SIDE * SIDE} pixels differ"  # rounding at exact pixel borders


def test_each_image_is_flipped_on_its_own_with_probability_half() -> None:
    torch.manual_seed(0)
    images = asymmetric_images(1).expand(4000, -1, -1, -1)
    flipped = RandomFlipRotate(flip_p=0.5, degrees=0)(images)
    is_flipped = (flipped == images.flip(-1)).flatten(1).all(1)
    assert (is_flipped | (flipped == images).flatten(1).all(1)).all()  # every image: flipped or untouched
    assert 0.47 < is_flipped.float().mean() < 0.53
    per_batch = is_flipped[: 62 * 64].reshape(62, 64).float().mean(1)
    assert ((per_batch > 0) & (per_batch < 1)).all()  # mixed within every batch, not one draw per batch


def test_each_image_is_rotated_by_its_own_uniform_angle() -> None:
    """A horizontal bar through the centre turns with the image: its principal axis gives the angle."""
    bar = torch.zeros(1, 1, SIDE, SIDE)
    bar[0, 0, SIDE // 2 - 1 : SIDE // 2 + 1, 2:-2] = 1.0
    torch.manual_seed(1)
    rotated = RandomFlipRotate(flip_p=0, degrees=10)(bar.expand(3000, -1, -1, -1))[:, 0]
    coordinates = torch.arange(SIDE, dtype=torch.float32)
    rows, cols = torch.meshgrid(coordinates, coordinates, indexing="ij")
    mass = rotated.sum((1, 2))
    y = rows - (rotated * rows).sum((1, 2), keepdim=True) / mass[:, None, None]
    x = cols - (rotated * cols).sum((1, 2), keepdim=True) / mass[:, None, None]
    mu11, mu20, mu02 = ((rotated * m).sum((1, 2)) for m in (x * y, x * x, y * y))
    angles = -torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))  # rows grow downwards
    assert angles.abs().max() < 11  # pixel rounding blurs each angle by under a degree
    assert angles.min() < -9 and angles.max() > 9
    assert abs(float(angles.mean())) < 0.4
    assert abs(float(angles.std()) - 10 / 3**0.5) < 0.3  # a uniform on [-10, 10] has sd 5.77
    assert abs(float((angles > 1).float().mean() - (angles < -1).float().mean())) < 0.05  # both ways alike


def test_sampled_parameters_are_uniform_angles_and_fair_flips() -> None:
    torch.manual_seed(2)
    angles, flips = RandomFlipRotate(flip_p=0.5, degrees=10).sample(20000, torch.device("cpu"))
    assert angles.min() >= -10 and angles.max() <= 10
    counts = torch.histc(angles, bins=10, min=-10, max=10)
    assert ((counts - 2000).abs() < 200).all(), counts  # each tenth of the range within 10% of its share
    assert 0.49 < flips.float().mean() < 0.51


def test_forward_applies_the_sampled_parameters() -> None:
    augmentation, images = RandomFlipRotate(), asymmetric_images(64)
    torch.manual_seed(3)
    expected = flip_rotate(images, *augmentation.sample(64, images.device))
    torch.manual_seed(3)
    assert torch.equal(augmentation(images), expected)


def test_same_seed_same_batch_and_other_seed_other_batch() -> None:
    augmentation, images = RandomFlipRotate(), asymmetric_images(64)
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(augmentation(images))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_no_flip_and_no_rotation_leaves_images_identical() -> None:
    images = asymmetric_images(8)
    assert torch.equal(RandomFlipRotate(flip_p=0, degrees=0)(images), images)
    assert torch.equal(flip_rotate(images, torch.zeros(8), torch.zeros(8, dtype=torch.bool)), images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flip_p": 1.5}, "flip_p must be within [0, 1], got 1.5"),
        ({"flip_p": "half"}, "flip_p must be within [0, 1], got 'half'"),
        ({"degrees": -1}, "degrees must be >= 0, got -1"),
        ({"degrees": "ten"}, "degrees must be >= 0, got 'ten'"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RandomFlipRotate(**kwargs)
