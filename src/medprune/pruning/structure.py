"""The pruned structure as plain JSON, so a pruned model can be rebuilt from safetensors without pickle.

A checkpoint of a physically pruned model stores its (smaller) state dict and, in its JSON metadata,
``pruned_structure(model_before, masks)``: the kept unit indices of every group. To load it, build the unpruned
architecture with ``create_model``, call :func:`medprune.pruning.physical.apply_structure` to shrink it to the same
shapes (the same surgery as :func:`medprune.pruning.physical.remove_units`, so module names and shapes match), then
``load_state_dict(strict=True)``.

>>> from medprune.models import create_model
>>> from medprune.models.units import unit_groups
>>> model = create_model("vit_small", num_classes=2, image_size=32)
>>> masks = {g.name: torch.arange(g.num_units) % 2 == 0 for g in unit_groups(model)}
>>> structure = pruned_structure(model, masks)
>>> structure["groups"]["blocks.0.attn.heads"]["kept"]
[0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medprune.models.units import unit_groups
from medprune.pruning.masks import validate_scores

FORMAT = "medprune.pruned-structure"
VERSION = 1


def pruned_structure(model_before: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Any]:
    """A JSON-serialisable record of which units ``masks`` keep in ``model_before``.

    Args:
        model_before: the unpruned model the masks were made for.
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep).

    Returns:
        ``{"format", "version", "model", "groups": {name: {"num_units": n, "kept": [indices]}}}`` where ``model`` is
        ``model_before.medprune_spec`` (or ``None``).
    """
    groups = unit_groups(model_before)
    validate_scores(masks, groups, what="masks")
    spec = getattr(model_before, "medprune_spec", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(spec) if spec else None,
        "groups": {
            g.name: {
                "num_units": g.num_units,
                "kept": torch.as_tensor(masks[g.name]).to(torch.bool).nonzero().flatten().tolist(),
            }
            for g in groups
        },
    }


def structure_masks(model: nn.Module, structure: Mapping[str, Any]) -> dict[str, Tensor]:
    """The keep-masks a structure describes, checked against ``model``'s unpruned unit groups."""
    if not isinstance(structure, Mapping) or structure.get("format") != FORMAT:
        raise ValueError(f"not a pruned structure (expected format {FORMAT!r}): {str(structure)[:120]}")
    if structure.get("version") != VERSION:
        raise ValueError(f"pruned structure version {structure.get('version')!r} is not supported (expected {VERSION})")
    groups = unit_groups(model)
    recorded = structure["groups"]
    expected = {g.name: g.num_units for g in groups}
    sizes = {name: int(entry["num_units"]) for name, entry in recorded.items()}
    if sizes != expected:
        wrong = sorted(set(sizes.items()) ^ set(expected.items()))[:5]
        raise ValueError(
            f"pruned structure was made for another model (group sizes differ, e.g. {wrong}); build the model with "
            f"the same architecture as the structure's 'model' entry {structure.get('model')}"
        )
    masks: dict[str, Tensor] = {}
    for g in groups:
        kept = torch.as_tensor(recorded[g.name]["kept"], dtype=torch.long)
        if kept.numel() and (kept.min() < 0 or kept.max() >= g.num_units):
            raise ValueError(f"pruned structure keeps unit indices outside [0, {g.num_units}) in {g.name!r}")
        mask = torch.zeros(g.num_units, dtype=torch.bool)
        mask[kept] = True
        masks[g.name] = mask
    return masks
