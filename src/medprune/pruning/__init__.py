"""Pruning: keep-masks from scores (pure), masked pruning (undoable), physical removal, saved structure, export.

Data flow: ``scores -> masks_from_scores -> apply_masks`` (the paper's zeroing) or ``remove_units`` (a smaller model)
``-> pruned_structure`` (JSON for checkpoints) ``-> export_onnx``.
"""

from __future__ import annotations

from medprune.pruning.masked import MaskHandle, apply_masks, following_batchnorms, mask_model
from medprune.pruning.masks import (
    NORMALIZATIONS,
    SCOPES,
    check_rate,
    masks_from_scores,
    normalize_scores,
    validate_scores,
)

__all__ = [
    "NORMALIZATIONS",
    "SCOPES",
    "MaskHandle",
    "apply_masks",
    "check_rate",
    "following_batchnorms",
    "mask_model",
    "masks_from_scores",
    "normalize_scores",
    "validate_scores",
]
