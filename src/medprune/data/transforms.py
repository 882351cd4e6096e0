"""Image transforms of the paper (appendix A) on uint8 tensors, built on ``torchvision.transforms.v2.functional``.

Training: RandomResizedCrop(scale 0.7-1.0, ratio 0.75-1.33), horizontal and vertical flips (p = 0.5 each), rotation
up to 30°, colour jitter (brightness/contrast/saturation factors in [0.8, 1.2], random order). Every split: resize to
``image_size`` × ``image_size`` and normalise with the ImageNet mean/std. Grey images become 3 identical channels when
the model takes 3 channels; with ``channels=1`` RGB images are converted to grey and normalised with
:data:`GREY_MEAN`/:data:`GREY_STD`.

Speed: the augmentation samples its own parameters and calls the v2 functional kernels directly, with flips and
rotation fused into one ``grid_sample`` whose grid is built element-wise. ``v2.RandomRotation`` builds its grid with a
3-column ``bmm`` that multi-threaded MKL runs ~100× slower than everything else on small images (34 ms per 28-px image
on 2 busy threads), and the ``v2.Compose`` dispatch costs ~1.5 ms per image; together they capped training at
~300 images/s. Augmentation runs on the image's own channels (grey images: one channel, three times cheaper) and the
channels are replicated after normalisation, which for grey images is exactly the same as augmenting three copies.

>>> t = build_transform(image_size=32, channels=3, train=False)
>>> t(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape
torch.Size([3, 32, 32])
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as tnf
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from medprune.data.augmentation import (
    CROP_RATIO,
    CROP_SCALE,
    GREY_MEAN,
    GREY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER,
    ROTATION_DEGREES,
    crop_box,
    uniform,
)
from medprune.data.batch_augment import can_fuse, random_augment_batch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread, restoring the caller's setting after. Data transforms work on small tensors where
    intra-op threads only add barriers (measured ~20-30x slower on 2 busy cores); DataLoader workers use one thread
    too."""
    n_threads = torch.get_num_threads()
    if n_threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def flip_rotate(image: Tensor, angle: float, hflip: bool = False, vflip: bool = False) -> Tensor:
    """Flip a float C×H×W image (horizontally, then vertically), then rotate it counter-clockwise by ``angle`` degrees
    about its centre; bilinear, zero fill, same size. Matches ``v2.functional.rotate(..., BILINEAR)`` after flips."""
    _, height, width = image.shape
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    xs = torch.arange(width, dtype=image.dtype) - (width - 1) / 2
    ys = torch.arange(height, dtype=image.dtype) - (height - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    gx = (cos * x - sin * y) * ((-2.0 if hflip else 2.0) / width)
    gy = (sin * x + cos * y) * ((-2.0 if vflip else 2.0) / height)
    grid = torch.stack((gx, gy), dim=-1).unsqueeze(0)
    return tnf.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def color_jitter(image: Tensor, strength: float = JITTER) -> Tensor:
    """Brightness, contrast and saturation (no-op on one channel) with factors in [1 ± strength], in random order."""
    for op in torch.randperm(3).tolist():
        factor = uniform(1.0 - strength, 1.0 + strength)
        if op == 0:
            image = F.adjust_brightness(image, factor)
        elif op == 1:
            image = F.adjust_contrast(image, factor)
        elif image.shape[0] == 3:
            image = F.adjust_saturation(image, factor)
    return image


class ImageTransform:
    """uint8 C×H×W (C = 1 or 3) → float32 ``channels``×S×S, normalised; augmented when ``train``.

    Args:
        image_size: output side S.
        channels: 1 or 3, channels fed to the model.
        train: apply the training augmentation.
    """

    def __init__(self, image_size: int, channels: int, train: bool) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.image_size = image_size
        self.channels = channels
        self.train = bool(train)
        self.mean = IMAGENET_MEAN if channels == 3 else GREY_MEAN
        self.std = IMAGENET_STD if channels == 3 else GREY_STD
        # Normalisation as one fused multiply-add: (x - mean) / std = x * scale + shift, x in [0, 1].
        std = torch.tensor(self.std)
        self._scale = (1.0 / std).view(-1, 1, 1)
        self._shift = (-torch.tensor(self.mean) / std).view(-1, 1, 1)

    def augment(self, image: Tensor) -> Tensor:
        """The training augmentation: uint8 C×H×W → float32 C×S×S in [0, 1]."""
        top, left, h, w = crop_box(image.shape[-2], image.shape[-1], CROP_SCALE, CROP_RATIO)
        size = [self.image_size, self.image_size]
        image = F.resized_crop(image, top, left, h, w, size, antialias=True)
        x = image.to(torch.float32).div_(255.0)
        flips = (torch.rand(2) < 0.5).tolist()
        x = flip_rotate(x, uniform(-ROTATION_DEGREES, ROTATION_DEGREES), hflip=flips[0], vflip=flips[1])
        return color_jitter(x.clamp_(0.0, 1.0))

    def __call__(self, image: Tensor) -> Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a uint8 C×H×W image with C in (1, 3), got {image.dtype} {tuple(image.shape)}")
        if self.channels == 1 and image.shape[0] == 3:
            image = F.rgb_to_grayscale(image)
        if self.train:
            x = self.augment(image)
        else:
            if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
                image = F.resize(image, [self.image_size, self.image_size], antialias=True)
            x = image.to(torch.float32).div_(255.0)
        out = torch.addcmul(self._shift, x, self._scale)  # broadcasts one grey channel to 3 when channels=3
        return out if out.shape[0] == self.channels else out.expand(self.channels, -1, -1).contiguous()

    def batch(self, images: Tensor) -> Tensor:
        """Transform a uint8 B×C×H×W batch of same-size images at once (each image gets its own random parameters).

        Evaluation: identical to calling the transform on each image. Training: the fused augmentation of
        :mod:`medprune.data.batch_augment` when the images need no large downscaling, else image by image. Runs with
        one torch thread (as DataLoader workers do), restoring the caller's setting after.
        """
        with single_thread():
            return self._batch(images)

    def _batch(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected a uint8 B×C×H×W batch with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
            )
        if self.channels == 1 and images.shape[1] == 3:
            images = F.rgb_to_grayscale(images)
        height, width = images.shape[-2:]
        if self.train and not can_fuse(height, width, self.image_size):
            return torch.stack([self(image) for image in images])
        if self.train:
            x = random_augment_batch(images, self.image_size)
        else:
            if (height, width) != (self.image_size, self.image_size):
                images = F.resize(images, [self.image_size, self.image_size], antialias=True)
            x = images.to(torch.float32).div_(255.0)
        out = torch.addcmul(self._shift, x, self._scale)
        return out if out.shape[1] == self.channels else out.expand(-1, self.channels, -1, -1).contiguous()

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, channels={self.channels}, train={self.train})"


@functools.lru_cache(maxsize=64)
def build_transform(image_size: int, channels: int, train: bool) -> ImageTransform:
    """The (shared, stateless) transform for these settings; see :class:`ImageTransform`."""
    return ImageTransform(image_size, channels, train)
