"""The chapter's augmentation, and more, for whole batches of image tensors, with random parameters per image.

torchvision's random transforms, given a batch, draw one flip and one angle for the whole batch. Here each
image gets its own: a horizontal flip with probability `flip_p`, then a rotation by an angle uniform in
[-degrees, degrees] about the image centre, nearest-neighbour and zero-filled like the PIL path's
RandomRotation. Both are one affine map, so a batch costs one sampling grid + `grid_sample`, on whatever
device the batch is on. Scales, shifts and an elastic distortion (`RandomAffine`'s other options) join the
same map and the same `grid_sample`.
"""

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from mnist_cnn.errors import ConfigError, is_number
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


@functools.cache
def _output_coordinates(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H*W, 3): x, y and 1 of each output pixel, in `affine_grid`'s units (align_corners=False)."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device, dtype=dtype)
    xy = F.affine_grid(identity, [1, 1, height, width], align_corners=False).view(-1, 2)
    return torch.cat([xy, torch.ones_like(xy[:, :1])], dim=1)


@functools.cache
def _pixels_to_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2,): one pixel in `grid_sample`'s x and y units; made once per device (a copy to a GPU waits for it)."""
    return torch.tensor([2 / width, 2 / height], device=device, dtype=dtype)


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, (B, C, height, width), align_corners=False)`, as one matrix product.

    torch's CPU `affine_grid` multiplies B small matrices with an inner size of 3, which here costs about 7
    times more than the same sums as one (H*W, 3) x (3, 2B) product at batch 64 (benchmarks/options.py).
    """
    grid = torch.einsum("pk,bjk->bpj", _output_coordinates(height, width, theta.device, theta.dtype), theta)
    return grid.view(len(theta), height, width, 2)


def flip_rotate(images: torch.Tensor, angles_deg: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip then rotate each image of a (B, C, H, W) float batch by its own parameters."""
    theta = flip_rotate_matrices(angles_deg.to(images.device, images.dtype), flips.to(images.device))
    grid = sampling_grid(theta, *images.shape[-2:])
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _check(name: str, value: object, low: float, high: float | None = None) -> None:
    if not is_number(value) or value < low or (high is not None and value > high):
        bounds = f"within [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"augmentation {name} must be {bounds}, got {value!r}")


def affine_matrices(
    angles_deg: torch.Tensor, flips: torch.Tensor, scales: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices for "flip, rotate, scale by `scales`, then shift by `shifts`".

    `shifts` (B, 2) are in `affine_grid`'s units (the image spans -1..1). The grid maps output coordinates to
    input ones, so this is the inverse map: unshift, unscale, then the inverse of flip-and-rotate.
    """
    theta = flip_rotate_matrices(angles_deg, flips)
    linear = theta[:, :, :2] / scales[:, None, None]
    offset = -(linear @ shifts.unsqueeze(-1))
    return torch.cat([linear, offset], dim=2)


@functools.cache
def gaussian_blur_matrix(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, size) matrix M such that M @ v blurs v by a Gaussian of `sigma` pixels, its ends reflected.

    The same blur as torchvision's `gaussian_blur` along one axis. A blur is linear, so blurring a batch of
    fields is two small matrix products, `M @ field @ M.T`: on this CPU 30 times faster than the convolution.
    """
    radius = min(math.ceil(3 * sigma), size - 1)  # reflection needs radius < size
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    identity = torch.eye(size, device=device, dtype=dtype)[:, None, :]  # each basis vector as a 1-channel row
    blurred = F.conv1d(F.pad(identity, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))
    return blurred[:, 0, :].T  # column j: what a unit at j spreads to


class RandomAffine(nn.Module):
    """Per-image random horizontal flip, rotation, scale, shift and elastic distortion of a (B, C, H, W) batch.

    Each image: flipped with probability `flip_p`; rotated by an angle uniform in [-degrees, degrees]; scaled by
    a factor uniform in [1 - scale, 1 + scale]; shifted by up to `translate` of the image's width and height
    (uniform, each axis on its own); and, where `elastic_alpha` > 0, displaced by a smooth random field
    (Simard et al. 2003: uniform noise blurred by a Gaussian of `elastic_sigma` pixels, times `elastic_alpha`
    pixels), the classic MNIST distortion. All of it is one `grid_sample`; `interpolation` is "nearest" (the
    chapter's RandomRotation, pixels kept as they are) or "bilinear" (smoother for scales and distortions).
    The defaults are the chapter's: flip 0.5, rotation 10, nothing else.
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.0,
        scale: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        interpolation: str = "nearest",
    ) -> None:
        super().__init__()
        _check("flip_p", flip_p, 0, 1)
        _check("degrees", degrees, 0)
        _check("translate", translate, 0, 1)
        _check("scale", scale, 0, 0.99)
        _check("elastic_alpha", elastic_alpha, 0)
        _check("elastic_sigma", elastic_sigma, 0.1)
        if interpolation not in ("nearest", "bilinear"):
            raise ConfigError(f"augmentation interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.flip_p, self.degrees, self.translate, self.scale = flip_p, degrees, translate, scale
        self.elastic_alpha, self.elastic_sigma, self.interpolation = elastic_alpha, elastic_sigma, interpolation

    def sample(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image flip-and-rotation parameters: angles in degrees, uniform in [-degrees, degrees], and flip flags."""
        angles = (torch.rand(batch_size, device=device, generator=generator) * 2 - 1) * self.degrees
        flips = torch.rand(batch_size, device=device, generator=generator) < self.flip_p
        return angles, flips

    def _uniform(self, shape: tuple[int, ...], bound: float, images: torch.Tensor, generator: torch.Generator | None):
        return (torch.rand(shape, device=images.device, generator=generator, dtype=images.dtype) * 2 - 1) * bound

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment `images`, drawing from `generator` (torch's global RNG when None)."""
        if not (self.flip_p or self.degrees or self.translate or self.scale or self.elastic_alpha) or not len(images):
            return images
        count = len(images)
        angles, flips = self.sample(count, images.device, generator)
        if not (self.translate or self.scale or self.elastic_alpha) and self.interpolation == "nearest":
            return flip_rotate(images, angles, flips)  # the chapter's augmentation, drawn as it always was
        scales = 1 + self._uniform((count,), self.scale, images, generator)
        shifts = self._uniform((count, 2), 2 * self.translate, images, generator)
        theta = affine_matrices(angles.to(images.dtype), flips, scales, shifts)
        grid = sampling_grid(theta, *images.shape[-2:])
        if self.elastic_alpha:
            grid = grid + self._displacement(images, generator)
        return F.grid_sample(images, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False)

    def _displacement(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A smooth random field (B, H, W, 2) in `grid_sample` units: Simard et al.'s uniform noise in [-1, 1],
        blurred, times `elastic_alpha` pixels. The blur shrinks it: at sigma 4 a pixel moves about alpha / 16."""
        count, _, height, width = images.shape
        noise = self._uniform((count, 2, height, width), 1.0, images, generator)
        rows = gaussian_blur_matrix(height, self.elastic_sigma, images.device, images.dtype)
        columns = gaussian_blur_matrix(width, self.elastic_sigma, images.device, images.dtype)
        field = rows @ noise @ columns.T
        pixels_to_grid = _pixels_to_grid(height, width, images.device, images.dtype)
        return field.permute(0, 2, 3, 1) * self.elastic_alpha * pixels_to_grid

    def extra_repr(self) -> str:
        extra = [f"translate={self.translate}", f"scale={self.scale}"] if self.translate or self.scale else []
        if self.elastic_alpha:
            extra.append(f"elastic_alpha={self.elastic_alpha}, elastic_sigma={self.elastic_sigma}")
        return ", ".join(
            [f"flip_p={self.flip_p}, degrees={self.degrees}", *extra, f"interpolation={self.interpolation}"]
        )


RandomFlipRotate = RandomAffine  # the name earlier run folders' configs use
