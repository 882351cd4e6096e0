"""Pruning: keep-masks from scores (pure), masked pruning (undoable), physical removal, saved structure, export.

Data flow: ``scores -> masks_from_scores -> apply_masks`` (the paper's zeroing) or ``remove_units`` (a smaller model)
``-> pruned_structure`` (JSON for checkpoints) ``-> export_onnx``; ``round_masks`` rounds kept channel counts up to a
hardware-friendly multiple and ``fold_batchnorms`` folds BatchNorm into the convolution before it (inference only).
"""

from __future__ import annotations

from medprune.pruning.cost import model_cost
from medprune.pruning.export import export_onnx, run_onnx
from medprune.pruning.folding import batchnorm_pairs, fold_batchnorms
from medprune.pruning.masked import MaskHandle, apply_masks, following_batchnorms, mask_model
from medprune.pruning.masks import (
    NORMALIZATIONS,
    SCALE_INVARIANT,
    SCOPES,
    achieved_rate,
    check_rate,
    masks_from_scores,
    normalize_scores,
    validate_scores,
)
from medprune.pruning.physical import apply_structure, coupled_groups, example_inputs_for, remove_units
from medprune.pruning.rounding import round_masks
from medprune.pruning.structure import pruned_structure, structure_masks

__all__ = [
    "NORMALIZATIONS",
    "SCALE_INVARIANT",
    "SCOPES",
    "MaskHandle",
    "achieved_rate",
    "apply_masks",
    "apply_structure",
    "batchnorm_pairs",
    "check_rate",
    "coupled_groups",
    "example_inputs_for",
    "export_onnx",
    "fold_batchnorms",
    "following_batchnorms",
    "mask_model",
    "model_cost",
    "masks_from_scores",
    "normalize_scores",
    "pruned_structure",
    "remove_units",
    "round_masks",
    "run_onnx",
    "structure_masks",
    "validate_scores",
]
