"""The batched augmentation draws the PIL path's distribution per image, and matches torchvision's ops."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mnist_cnn.augment import (
    RandomAffine,
    RandomFlipRotate,
    affine_matrices,
    flip_rotate,
    flip_rotate_matrices,
    gaussian_blur_matrix,
    sampling_grid,
)
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
        ({"translate": 1.5}, "translate must be within [0, 1], got 1.5"),
        ({"scale": 1}, "scale must be within [0, 0.99], got 1"),
        ({"elastic_alpha": -1}, "elastic_alpha must be >= 0, got -1"),
        ({"elastic_sigma": 0}, "elastic_sigma must be >= 0.1, got 0"),
        ({"interpolation": "cubic"}, "interpolation must be 'nearest' or 'bilinear', got 'cubic'"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RandomAffine(**kwargs)


def test_the_old_name_is_the_same_augmentation() -> None:
    """Run folders written before RandomAffine name RandomFlipRotate in their configs; they still resume."""
    assert RandomFlipRotate is RandomAffine


def centre_of_mass(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of each (B, H, W) image's centre of mass."""
    coordinates = torch.arange(SIDE, dtype=torch.float32)
    mass = images.sum((1, 2))
    return (images.sum(2) * coordinates).sum(1) / mass, (images.sum(1) * coordinates).sum(1) / mass


def square(side: int = 8) -> torch.Tensor:
    image = torch.zeros(1, 1, SIDE, SIDE)
    start = (SIDE - side) // 2
    image[0, 0, start : start + side, start : start + side] = 1.0
    return image


@pytest.mark.parametrize("height", [28, 17])
def test_the_sampling_grid_is_torchs_affine_grid(height: int) -> None:
    theta = torch.randn(300, 2, 3, generator=torch.Generator().manual_seed(9))
    expected = F.affine_grid(theta, [300, 1, height, 28], align_corners=False)
    assert torch.allclose(sampling_grid(theta, height, 28), expected, atol=1e-6)


def test_without_shift_scale_or_distortion_the_affine_map_is_the_flip_and_rotation() -> None:
    angles, flips = torch.tensor([-7.0, 3.5]), torch.tensor([True, False])
    matrices = affine_matrices(angles, flips, torch.ones(2), torch.zeros(2, 2))
    assert torch.allclose(matrices, flip_rotate_matrices(angles, flips))


def test_each_image_is_shifted_on_its_own_by_up_to_translate_of_its_side() -> None:
    torch.manual_seed(4)
    shifted = RandomAffine(flip_p=0, degrees=0, translate=0.1)(square().expand(3000, -1, -1, -1))[:, 0]
    rows, cols = centre_of_mass(shifted)
    for offsets in (rows - (SIDE - 1) / 2, cols - (SIDE - 1) / 2):
        assert offsets.abs().max() <= 2.8 + 0.5  # 10% of 28 pixels, and half a pixel of nearest rounding
        assert offsets.min() < -2 and offsets.max() > 2 and abs(float(offsets.mean())) < 0.15
    assert abs(float(torch.corrcoef(torch.stack([rows, cols]))[0, 1])) < 0.1  # each axis drawn on its own


def test_each_image_is_scaled_on_its_own_within_the_range() -> None:
    torch.manual_seed(5)
    scaled = RandomAffine(flip_p=0, degrees=0, scale=0.2)(square(10).expand(3000, -1, -1, -1))[:, 0]
    sides = scaled.sum((1, 2)).sqrt()  # the square's side, from its area
    assert sides.min() >= 10 * 0.8 - 1 and sides.max() <= 10 * 1.2 + 1
    assert sides.min() < 8.6 and sides.max() > 11.4  # both ends of the range are reached
    rows, cols = centre_of_mass(scaled)
    assert (rows - (SIDE - 1) / 2).abs().max() < 0.6 and (cols - (SIDE - 1) / 2).abs().max() < 0.6  # about the centre


def test_the_elastic_distortion_is_a_smooth_field_of_the_configured_size() -> None:
    images = torch.zeros(500, 1, SIDE, SIDE)
    torch.manual_seed(6)
    small = RandomAffine(elastic_alpha=10, elastic_sigma=4)._displacement(images, None)
    torch.manual_seed(6)
    large = RandomAffine(elastic_alpha=30, elastic_sigma=4)._displacement(images, None)
    assert small.shape == (500, SIDE, SIDE, 2)
    assert torch.allclose(large, 3 * small, atol=1e-6)  # proportional to elastic_alpha
    pixels = small * SIDE / 2  # grid units back to pixels
    neighbour_change = (pixels[:, 1:] - pixels[:, :-1]).abs().mean()
    # Smooth: neighbours move almost alike (Gaussian-blurred noise: about 0.18 of the typical move for sigma 4;
    # unblurred noise would give about 1.4).
    assert neighbour_change < 0.3 * pixels.abs().mean()
    assert 0.1 < float(pixels.abs().mean()) < 2  # a pixel or so, as Simard et al.'s alpha 34, sigma 4 on 28x28


@pytest.mark.parametrize("sigma", [1.0, 4.0, 6.0])
def test_the_blur_of_the_distortion_field_is_torchvisions_gaussian_blur(sigma: float) -> None:
    fields = torch.rand(4, 2, SIDE, SIDE, generator=torch.Generator().manual_seed(8))
    blur = gaussian_blur_matrix(SIDE, sigma, fields.device, fields.dtype)
    kernel = 2 * min(math.ceil(3 * sigma), SIDE - 1) + 1
    expected = TF.gaussian_blur(fields, [kernel, kernel], [sigma, sigma])
    assert torch.allclose(blur @ fields @ blur.T, expected, atol=1e-5)


def test_elastic_distortion_keeps_the_digit_where_it_was() -> None:
    torch.manual_seed(7)
    distorted = RandomAffine(flip_p=0, degrees=0, elastic_alpha=34, elastic_sigma=4, interpolation="bilinear")(
        square(10).expand(200, -1, -1, -1)
    )[:, 0]
    assert not torch.equal(distorted[0], distorted[1])  # each image its own field
    for offsets in centre_of_mass(distorted):  # the field's slow parts move a digit a little, both ways alike
        offsets = offsets - (SIDE - 1) / 2
        assert offsets.abs().median() < 1.5 and abs(float(offsets.mean())) < 0.3
    ink = distorted.sum((1, 2)) / 100  # the square's 100 pixels: stretched here, squeezed there, on average kept
    assert abs(float(ink.mean()) - 1) < 0.1 and ink.min() > 0.4
