"""Transforms: per-image and batched augmentation against torchvision's functional kernels, DataLoader batches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from medprune.data import ArrayStore, DatasetError, ImageDataset, build_transform
from medprune.data.augmentation import CROP_RATIO, crop_box
from medprune.data.batch_augment import crop_boxes, fused_crop_flip_rotate, jitter_batch
from medprune.data.transforms import flip_rotate


@pytest.mark.parametrize(("hflip", "vflip"), [(False, False), (True, False), (False, True), (True, True)])
def test_flip_rotate_matches_torchvision(hflip: bool, vflip: bool) -> None:
    image = torch.rand(3, 20, 31)
    expected = image
    if hflip:
        expected = F.horizontal_flip(expected)
    if vflip:
        expected = F.vertical_flip(expected)
    expected = F.rotate(expected, 17.0, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(flip_rotate(image, 17.0, hflip, vflip), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_batch_matches_torchvision(channels: int) -> None:
    x = torch.rand(6, channels, 9, 9)
    factors = torch.empty(6, 3).uniform_(0.8, 1.2)
    orders = torch.stack([torch.randperm(3) for _ in range(6)])
    out = jitter_batch(x.clone(), factors, orders)
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for b in range(6):
        expected = x[b]
        for op in orders[b].tolist():
            if op < 2 or channels == 3:
                expected = adjust[op](expected, float(factors[b, op]))
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=0)


def test_fused_crop_flip_rotate_matches_two_step() -> None:
    images = F.resize(torch.rand(4, 3, 6, 6), [24, 24], antialias=True)  # smooth: resampling twice ≈ once
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the rotation's zero-filled corners
    # full-image box, same size: flips and rotation alone are exact
    full = torch.tensor([[0, 0, 24, 24]] * 4)
    angles, hflip, vflip = (
        torch.tensor([12.0, -25.0, 90.0, 0.0]),
        torch.tensor([1, 0, 1, 0]),
        torch.tensor([0, 1, 1, 1]),
    )
    out = fused_crop_flip_rotate(images, 24, full, angles, hflip.bool(), vflip.bool())
    for b in range(4):
        expected = flip_rotate(images[b], float(angles[b]), bool(hflip[b]), bool(vflip[b]))
        torch.testing.assert_close(out[b][inner], expected[inner], atol=1e-5, rtol=0)
    # crop and resize alone are exact too; together with a rotation they differ by interpolation error only
    boxes = torch.tensor([[2, 3, 20, 18], [5, 1, 17, 22], [0, 0, 24, 24], [3, 3, 18, 18]])
    for angle, tolerance in ((0.0, 1e-5), (15.0, 0.08)):
        out = fused_crop_flip_rotate(images, 28, boxes, torch.full((4,), angle), hflip.bool(), vflip.bool())
        for b in range(4):
            top, left, h, w = boxes[b].tolist()
            crop = F.resized_crop(images[b], top, left, h, w, [28, 28], antialias=True)
            expected = flip_rotate(crop, angle, bool(hflip[b]), bool(vflip[b]))
            assert float((out[b][inner] - expected[inner]).abs().max()) < tolerance, (angle, b)


def test_crop_boxes_respect_scale_and_ratio() -> None:
    boxes = crop_boxes(2000, 28, 40)
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 40).all())
    area = h * w / (28 * 40)
    assert float(area.min()) > 0.64 and float(area.max()) <= 1.0 + 1e-6
    ratio = w / h
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.4
    single = [crop_box(28, 40, (0.7, 1.0), CROP_RATIO) for _ in range(200)]
    assert all(0 <= t and 0 <= le and t + hh <= 28 and le + ww <= 40 for t, le, hh, ww in single)
    assert math.isclose(CROP_RATIO[1], 4 / 3)


def _toy(n: int = 40, channels: int = 1, train: bool = True, size: int = 28) -> ImageDataset:
    rng = np.random.default_rng(0)
    shape = (n, 28, 28) if channels == 1 else (n, 28, 28, 3)
    store = ArrayStore(rng.integers(0, 256, shape, dtype=np.uint8), origin="toy.npz[train]")
    return ImageDataset(store, np.arange(n) % 3, ["a", "b", "c"], image_size=size, channels=3, train=train)


@pytest.mark.parametrize("channels", [1, 3])
def test_dataloader_batches(channels: int) -> None:
    train = _toy(channels=channels)
    threads = torch.get_num_threads()
    x, y = next(iter(DataLoader(train, batch_size=16, shuffle=False)))
    assert torch.get_num_threads() == threads, "the batched transform must restore the thread setting"
    assert x.shape == (16, 3, 28, 28) and y.tolist() == train.labels[:16].tolist()
    assert torch.isfinite(x).all() and not torch.equal(x[0], train.with_transform(False)[0][0])
    low = (0 - 0.485) / 0.229  # black after normalisation (rotation fill) is the minimum value
    assert float(x.min()) >= low - 1e-4 and float(x.max()) <= (1 - 0.406) / 0.225 + 1e-4
    evaluation = train.with_transform(False)
    xe, _ = next(iter(DataLoader(evaluation, batch_size=16)))
    torch.testing.assert_close(xe, torch.stack([evaluation[i][0] for i in range(16)]), atol=1e-6, rtol=0)
    resized = _toy(channels=channels, train=False, size=36)
    xr, _ = next(iter(DataLoader(resized, batch_size=5)))
    torch.testing.assert_close(xr, torch.stack([resized[i][0] for i in range(5)]), atol=1e-5, rtol=0)


def test_transform_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        build_transform(28, 2, False)
    with pytest.raises(ValueError, match="expected a uint8"):
        build_transform(28, 3, False)(torch.zeros(3, 8, 8))
    with pytest.raises(DatasetError, match=r"label 5 of toy\.npz\[x\]\[1\] is out of range: 3 classes"):
        ImageDataset(ArrayStore(np.zeros((2, 4, 4), np.uint8), "toy.npz[x]"), [0, 5], ["a", "b", "c"], image_size=4)
    with pytest.raises(IndexError):
        _toy().subset([0, 99])
