"""The paper's augmentation and normalisation settings (appendix A), and the random-crop geometry.

Shared by the per-image transform (:mod:`medprune.data.transforms`) and the batched one
(:mod:`medprune.data.batch_augment`), and by Integrated Gradients' ``mean`` baseline (the ImageNet statistics).
"""

from __future__ import annotations

import math

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Channel means of the ImageNet statistics, used when the model takes one grey channel.
GREY_MEAN: tuple[float] = (sum(IMAGENET_MEAN) / 3,)
GREY_STD: tuple[float] = (sum(IMAGENET_STD) / 3,)

CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (0.75, 4.0 / 3.0)
ROTATION_DEGREES = 30.0
JITTER = 0.2  # brightness, contrast and saturation factors drawn from [1 - JITTER, 1 + JITTER]


def uniform(low: float, high: float) -> float:
    """One draw from U(low, high) with the torch RNG (so ``torch.manual_seed`` fixes the augmentation)."""
    return float(torch.empty(()).uniform_(low, high))


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, ...]:
    """``(top, left, h, w)`` of a random crop, the algorithm of ``RandomResizedCrop`` (torch RNG)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * uniform(*scale)
        aspect = math.exp(uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()))
            left = int(torch.randint(0, width - w + 1, ()))
            return top, left, h, w
    return central_crop_box(height, width, ratio)


def central_crop_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """``RandomResizedCrop``'s fallback: the central crop with the image's aspect ratio clipped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
