"""The class indices relevance starts from, checked once for every LRP path."""

from __future__ import annotations

import torch
from torch import Tensor


def check_targets(num_classes: int, targets: Tensor, batch: int) -> Tensor:
    """``targets`` as int64 class indices after checking their shape, dtype and range.

    Raises:
        ValueError: naming what is wrong and what was given.
    """
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
    if targets.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if batch and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}), got {targets.tolist()}")
    return targets.long()
