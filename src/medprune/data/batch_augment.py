"""The training augmentation for a whole batch of same-size uint8 images at once (used by DataLoader batches).

Each image still gets its own random crop, flips, angle and jitter factors/order; crop + flips + rotation are fused
into one ``grid_sample`` per batch, with the rotation's zero fill reproduced by a coverage weight. Compared with the
per-image path (:meth:`~medprune.data.transforms.ImageTransform.augment`: resized crop, then flip and rotate) this
resamples once instead of twice; outputs agree to interpolation error. It does not antialias, so
:class:`~medprune.data.transforms.ImageTransform` uses it only when the stored images are at most
:data:`MAX_DOWNSCALE` × the output size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as tnf
from torch import Tensor

from medprune.data.augmentation import CROP_RATIO, CROP_SCALE, JITTER, ROTATION_DEGREES, central_crop_box

MAX_DOWNSCALE = 1.5
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def fused_crop_flip_rotate(
    images: Tensor, image_size: int, boxes: Tensor, angles: Tensor, hflip: Tensor, vflip: Tensor
) -> Tensor:
    """Resized crop to ``image_size``, then flips, then counter-clockwise rotation, in one resampling.

    Args:
        images: float B×C×H×W in [0, 1].
        image_size: output side S.
        boxes: B×4 ``(top, left, h, w)`` crop boxes in pixels.
        angles: B rotation angles in degrees.
        hflip: B booleans; vflip: B booleans.

    Returns:
        float B×C×S×S; outside the rotated crop the image is 0 (as with ``v2.functional.rotate``'s fill).
    """
    batch, _, height, width = images.shape
    size = image_size
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    theta = torch.deg2rad(angles.to(torch.float32)).view(batch, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    sign_x = torch.where(hflip, -1.0, 1.0).view(batch, 1, 1)
    sign_y = torch.where(vflip, -1.0, 1.0).view(batch, 1, 1)
    qx = (cos * x - sin * y) * sign_x  # centred coordinates in the resized crop
    qy = (sin * x + cos * y) * sign_y
    half = size / 2 + 0.5
    coverage = (half - qx.abs()).clamp(0, 1) * (half - qy.abs()).clamp(0, 1)
    top, left, h, w = (boxes[:, k].to(torch.float32).view(batch, 1, 1) for k in range(4))
    px = left + w / 2 - 0.5 + qx * (w / size)  # pixel coordinates in the stored image
    py = top + h / 2 - 0.5 + qy * (h / size)
    grid = torch.stack(((2 * px + 1) / width - 1, (2 * py + 1) / height - 1), dim=-1)
    out = tnf.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * coverage.unsqueeze(1)


def _grey(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GREY_WEIGHTS[0] * r + _GREY_WEIGHTS[1] * g + _GREY_WEIGHTS[2] * b).unsqueeze(1)


def jitter_batch(x: Tensor, factors: Tensor, orders: Tensor) -> Tensor:
    """Brightness, contrast, saturation per image with ``torchvision`` semantics (saturation: no-op on one channel).

    Args:
        x: float B×C×H×W in [0, 1].
        factors: B×3 factors for (brightness, contrast, saturation).
        orders: B×3 permutations of (0, 1, 2): the order each image applies the three adjustments in.
    """
    view = (-1, 1, 1, 1)
    for step in range(3):
        op = orders[:, step].view(view)
        factor = factors.gather(1, orders[:, step : step + 1]).view(view)
        if x.shape[1] == 1:
            target = torch.where(op == 1, x.mean(dim=(-3, -2, -1), keepdim=True), 0.0)  # brightness blends with 0
            factor = torch.where(op == 2, 1.0, factor)
        else:
            grey = _grey(x)
            target = torch.where(op == 0, 0.0, torch.where(op == 1, grey.mean(dim=(-3, -2, -1), keepdim=True), grey))
        x = (factor * x + (1 - factor) * target).clamp_(0.0, 1.0)
    return x


def crop_boxes(batch: int, height: int, width: int) -> Tensor:
    """B×4 ``(top, left, h, w)``: :func:`~medprune.data.transforms.crop_box`'s algorithm, vectorised."""
    area = height * width
    target = area * torch.empty(batch, 10).uniform_(*CROP_SCALE)
    log_ratio = torch.empty(batch, 10).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    fallback = ~ok.any(dim=1)  # central crop with the image's own ratio clipped to the bounds
    if fallback.any():
        fb_top, fb_left, fb_h, fb_w = central_crop_box(height, width, CROP_RATIO)
        h[fallback], w[fallback] = float(fb_h), float(fb_w)
    top = torch.floor(torch.rand(batch) * (height - h + 1))
    left = torch.floor(torch.rand(batch) * (width - w + 1))
    if fallback.any():
        top[fallback], left[fallback] = float(fb_top), float(fb_left)
    return torch.stack((top, left, h, w), dim=1)


def random_augment_batch(images: Tensor, image_size: int) -> Tensor:
    """The training augmentation with fresh random parameters per image: uint8 B×C×H×W → float B×C×S×S in [0, 1]."""
    batch, _, height, width = images.shape
    boxes = crop_boxes(batch, height, width)
    angles = torch.empty(batch).uniform_(-ROTATION_DEGREES, ROTATION_DEGREES)
    flips = torch.rand(batch, 2) < 0.5
    x = fused_crop_flip_rotate(
        images.to(torch.float32).div_(255.0), image_size, boxes, angles, flips[:, 0], flips[:, 1]
    )
    factors = torch.empty(batch, 3).uniform_(1.0 - JITTER, 1.0 + JITTER)
    orders = torch.argsort(torch.rand(batch, 3), dim=1)
    return jitter_batch(x.clamp_(0.0, 1.0), factors, orders)


def can_fuse(height: int, width: int, image_size: int) -> bool:
    """Whether images of this size may take the fused path (no downscaling beyond :data:`MAX_DOWNSCALE`)."""
    return max(height, width) <= MAX_DOWNSCALE * image_size
