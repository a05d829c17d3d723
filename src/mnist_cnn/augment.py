"""The chapter's augmentation for whole batches of image tensors, with random parameters drawn per image.

torchvision's random transforms, given a batch, draw one flip and one angle for the whole batch. Here each
image gets its own: a horizontal flip with probability `flip_p`, then a rotation by an angle uniform in
[-degrees, degrees] about the image centre, nearest-neighbour and zero-filled like the PIL path's
RandomRotation. Both are one affine map, so a batch costs one `affine_grid` + `grid_sample`, on whatever
device the batch is on.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from mnist_cnn.errors import ConfigError
from mnist_cnn.images import PIXEL_MEAN, PIXEL_STD


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float in [0, 1], as ToTensor gives."""
    return images.float().div_(255)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], as Normalize(0.5, 0.5) gives."""
    return images.sub_(PIXEL_MEAN).div_(PIXEL_STD)


def flip_rotate_matrices(angles_deg: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices for "flip (where `flips`), then rotate counter-clockwise by the angle".

    `affine_grid` maps output coordinates to input ones, so this is the inverse map: rotate back, then flip.
    """
    radians = angles_deg * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    sign = 1 - 2 * flips.to(cos.dtype)  # -1 mirrors x
    zero = torch.zeros_like(cos)
    row_x = torch.stack([sign * cos, -sign * sin, zero], dim=1)
    row_y = torch.stack([sin, cos, zero], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def flip_rotate(images: torch.Tensor, angles_deg: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip then rotate each image of a (B, C, H, W) float batch by its own parameters."""
    theta = flip_rotate_matrices(angles_deg.to(images.device, images.dtype), flips.to(images.device))
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RandomFlipRotate(nn.Module):
    """Per-image random horizontal flip and rotation of a (B, C, H, W) float batch."""

    def __init__(self, flip_p: float = 0.5, degrees: float = 10.0) -> None:
        super().__init__()
        if not _is_number(flip_p) or not 0 <= flip_p <= 1:
            raise ConfigError(f"augmentation flip_p must be within [0, 1], got {flip_p!r}")
        if not _is_number(degrees) or degrees < 0:
            raise ConfigError(f"augmentation degrees must be >= 0, got {degrees!r}")
        self.flip_p = flip_p
        self.degrees = degrees

    def sample(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image parameters: angles in degrees, uniform in [-degrees, degrees], and flip flags."""
        angles = (torch.rand(batch_size, device=device, generator=generator) * 2 - 1) * self.degrees
        flips = torch.rand(batch_size, device=device, generator=generator) < self.flip_p
        return angles, flips

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment `images`, drawing from `generator` (torch's global RNG when None)."""
        if not (self.flip_p or self.degrees) or not len(images):
            return images
        angles, flips = self.sample(len(images), images.device, generator)
        return flip_rotate(images, angles, flips)

    def extra_repr(self) -> str:
        return f"flip_p={self.flip_p}, degrees={self.degrees}"
