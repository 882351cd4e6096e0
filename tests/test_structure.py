"""pruned_structure / apply_structure: a pruned model rebuilt from JSON + safetensors, without pickle."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.masks import masks_from_scores
from medprune.pruning.physical import apply_structure, coupled_groups, remove_units
from medprune.pruning.structure import pruned_structure, structure_masks


@functools.cache
def _base(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model(name, num_classes=3, image_size=32)


def _pruned(name: str, rate: float = 0.5) -> tuple[torch.nn.Module, dict]:
    model = _base(name)
    g = torch.Generator().manual_seed(5)
    scores = {u.name: torch.rand(u.num_units, generator=g) for u in unit_groups(model)}
    masks = masks_from_scores(scores, rate, scope="layer", couplings=coupled_groups(model))
    return remove_units(model, masks), masks


@pytest.mark.parametrize("name", ["resnet_small", "vit_small"])
def test_round_trip_through_json_and_safetensors(name: str, tmp_path: Path) -> None:
    pruned, masks = _pruned(name)
    structure = pruned_structure(_base(name), masks)
    assert pruned.medprune_pruned == structure
    (tmp_path / "structure.json").write_text(json.dumps(structure))
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(tmp_path / "w.safetensors"))

    fresh = create_model(name, num_classes=3, image_size=32)  # other random weights
    rebuilt = apply_structure(fresh, json.loads((tmp_path / "structure.json").read_text()))
    rebuilt.load_state_dict(load_file(str(tmp_path / "w.safetensors")), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))
    assert fresh.blocks[0].attn.num_heads == 4 if name == "vit_small" else fresh.conv1.out_channels == 16


def test_structure_records_kept_indices_and_spec() -> None:
    model = _base("vit_small")
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in unit_groups(model)}
    masks["blocks.3.attn.heads"] = torch.tensor([True, False, False, True])
    structure = pruned_structure(model, masks)
    assert structure["groups"]["blocks.3.attn.heads"] == {"num_units": 4, "kept": [0, 3]}
    assert structure["model"]["name"] == "vit_small" and structure["version"] == 1
    assert all(torch.equal(structure_masks(model, structure)[k], v) for k, v in masks.items())


def test_structure_for_another_model_or_malformed_is_refused() -> None:
    _, masks = _pruned("resnet_small")
    structure = pruned_structure(_base("resnet_small"), masks)
    with pytest.raises(ValueError, match="made for another model"):
        apply_structure(_base("vit_small"), structure)
    with pytest.raises(ValueError, match="not a pruned structure"):
        apply_structure(_base("resnet_small"), {"groups": {}})
    bad = json.loads(json.dumps(structure))
    bad["groups"]["conv1"]["kept"] = [0, 99]
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        structure_masks(_base("resnet_small"), bad)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    checkpoint = pytest.importorskip("medprune.checkpoint")
    pruned, _ = _pruned("resnet_small", 0.3)
    checkpoint.save_checkpoint(tmp_path / "pruned", pruned, meta={"pruned": pruned.medprune_pruned})
    loaded, meta = checkpoint.load_checkpoint(tmp_path / "pruned")
    assert meta["pruned"] == pruned.medprune_pruned
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in _base("resnet_small").parameters())
