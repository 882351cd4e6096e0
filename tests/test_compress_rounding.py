"""Channel rounding in compress's search: the search, the MACs floor and the final masks use one rounded cut."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.compression.search import Workbench, candidate_masks, masks_at
from medprune.config import ConfigError
from medprune.metrics import metrics_from_predictions, predict
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import coupled_groups, model_cost, remove_units
from medprune.pruning.cost import MacsMeter
from medprune.pruning.ranking import Ranking
from medprune.recovery.recipe import FinetuneRecipe
from medprune.runs.compress import CompressConfig, compress


def _bench(name: str, tmp_path: Path, multiple: int) -> Workbench:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=28).eval()
    val = (torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 2)
    probs, truth = predict(model, val)
    return Workbench(
        model=model,
        train=None,
        val=val,
        class_names=["a", "b"],
        recalibration=None,
        couplings=coupled_groups(model),
        ranking=Ranking(couplings=True),
        recipe=FinetuneRecipe(distill=False),
        seed=0,
        device="cpu",
        out=tmp_path,
        baseline=metrics_from_predictions(probs, truth, ["a", "b"]),
        baseline_predictions=probs.argmax(1),
        macs=MacsMeter(model),
        channel_multiple=multiple,
    )


def _scores(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {g.name: torch.rand(g.num_units, generator=generator) for g in unit_groups(model)}


@pytest.mark.parametrize("name", ["vgg_small", "resnet_small"])
def test_rounded_candidates_keep_multiples_meet_the_floor_and_are_the_final_masks(name: str, tmp_path: Path) -> None:
    bench = _bench(name, tmp_path, 8)
    plain = replace(bench, channel_multiple=1)
    scores = _scores(bench.model)
    before = model_cost(bench.model)["macs"]
    for rate in (0.3, 0.5, 0.7):
        candidate = candidate_masks(bench, scores, rate)
        for group in unit_groups(bench.model):
            kept = int(candidate.masks[group.name].sum())
            assert kept % 8 == 0 or kept == group.num_units, (rate, group.name, kept)
        removed = 1 - model_cost(remove_units(bench.model, candidate.masks))["macs"] / before
        assert removed >= rate - 1e-9 and candidate.macs_removed == pytest.approx(removed)
        final = masks_at(bench, scores, candidate.unit_rate)  # what final_model cuts at the chosen row's unit rate
        assert all(torch.equal(final[k], m) for k, m in candidate.masks.items())
        unrounded = masks_at(plain, scores, candidate.unit_rate)  # the same ranking, cut at the same unit rate
        assert all(bool((final[k] | ~m).all()) for k, m in unrounded.items())
        assert any(not torch.equal(final[k], m) for k, m in unrounded.items())


def test_channel_multiple_is_checked_at_the_boundary() -> None:
    with pytest.raises(ConfigError, match="channel_multiple"):
        CompressConfig(checkpoint="x", channel_multiple=0)


def test_compress_ships_the_rounded_model_and_loads_it_back(tmp_path: Path, data_root: Path) -> None:
    torch.manual_seed(0)
    model = create_model("vgg_small", num_classes=2, image_size=28).eval()
    meta = {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}}
    checkpoint = str(save_checkpoint(tmp_path / "train" / "model", model, meta))
    options = dict(method="magnitude", rates=[0.5], metric="accuracy", tolerance=0.9, decision_rule="point")
    options.update(max_class_recall_drop=1.0, search_recovery="recalibrate", finetune_epochs=0)
    options.update(recalibration_samples=32, latency_repeats=1, channel_multiple=8)
    result = compress(checkpoint, str(tmp_path / "out"), data_root=str(data_root), **options)
    for group in unit_groups(model):
        kept = int(result.masks[group.name].sum())
        assert kept % 8 == 0 or kept == group.num_units, (group.name, kept)
    assert 1 - model_cost(result.model)["macs"] / model_cost(model)["macs"] >= 0.5  # the MACs floor still holds
    shipped, _ = load_checkpoint(str(tmp_path / "out" / "model.safetensors"))
    widths = [m.out_channels for m in shipped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [m.out_channels for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths)
