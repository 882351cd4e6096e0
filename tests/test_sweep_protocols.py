"""Sweep rows of issue 9: val and test rows, the recalibrate key, achieved rates, parameters/MACs removed, protocols."""

from __future__ import annotations

import pytest
import torch
from helpers import random_scores, tiny_sweep_model

from medprune.models.units import unit_groups
from medprune.pruning import coupled_groups, masks_from_scores, model_cost, remove_units
from medprune.pruning.cost import CostCounter
from medprune.pruning.ranking import Ranking
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.protocols import PROTOCOLS, Setting, protocol_name, settings_from
from medprune.sweep.table import RowLog, decode_classes, row_key


def _tiny():
    return tiny_sweep_model(48)


def _scores(model):
    return random_scores(model)


def test_recalibrate_is_part_of_the_key():
    plain = CurveParams("m", "d", "c").row("lrp", "random", 0.3, "val")
    bn = CurveParams("m", "d", "c", recalibrate="bn", recalibrate_samples=64).row("lrp", "random", 0.3, "val")
    test = CurveParams("m", "d", "c").row("lrp", "random", 0.3, "test")
    assert len({row_key(plain), row_key(bn), row_key(test)}) == 3
    assert bn["recalibrate"] == "bn" and bn["recalibrate_samples"] == 64
    # the baseline is shared by every setting and seed of a checkpoint
    base = CurveParams("m", "d", "c", seed=2, recalibrate="bn").row("baseline", "none", 0.0, "val")
    assert row_key(base) == row_key(CurveParams("m", "d", "c").row("baseline", "none", 0.0, "val"))


def test_rows_per_split_with_achieved_rate_cost_and_predictions(tmp_path):
    model, x, y = _tiny()
    couplings = coupled_groups(model)
    data = SweepInputs({"val": (x[:20], y[:20]), "test": (x[20:], y[20:])}, ["a", "b"], x[:32], CostCounter(model))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    for recalibrate in ("none", "bn"):
        params = CurveParams(
            "resnet_small", "d", "c", ranking=Ranking(couplings=True), recalibrate=recalibrate, recalibrate_samples=32
        )
        rows += sweep_model(
            model,
            params,
            [("lrp", "random")],
            [0.0, 0.4],
            _scores(model),
            data,
            RowLog(tmp_path / "r.jsonl"),
            couplings,
        )
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # masks and BN statistics undone
    pruned = {(r["recalibrate"], r["split"]): r for r in rows if r["method"] == "lrp" and r["rate"] == 0.4}
    assert set(pruned) == {("none", "val"), ("none", "test"), ("bn", "val"), ("bn", "test")}
    row = pruned[("none", "test")]
    assert len(decode_classes(row["predictions"])) == row["n_images"] == 28
    # achieved rate within half a coupled set of the target; parameters removed equal physical removal's
    total = sum(g.num_units for g in unit_groups(model))
    largest = max(
        len(members) * next(g.num_units for g in unit_groups(model) if g.name == members[0]) for members in couplings
    )
    assert abs(row["achieved_rate"] - 0.4) * total <= largest
    masks = masks_from_scores(_scores(model)("lrp", "random"), 0.4, couplings=couplings)
    physical = model_cost(model)["params"] - model_cost(remove_units(model, masks))["params"]
    assert row["params_removed"] == physical
    # recalibration changes the pruned model's predictions, not the masks
    assert pruned[("bn", "test")]["achieved_rate"] == row["achieved_rate"]
    assert pruned[("bn", "test")]["predictions"] != row["predictions"]


def test_bn_without_images_is_refused(tmp_path):
    model, x, y = _tiny()
    with pytest.raises(ValueError, match="recalibration images"):
        sweep_model(
            model,
            CurveParams("m", "d", "c", recalibrate="bn"),
            [("lrp", "random")],
            [0.3],
            _scores(model),
            SweepInputs({"val": (x, y)}, ["a", "b"]),
            RowLog(tmp_path / "r.jsonl"),
        )


def test_settings_protocols_and_search():
    explicit = {"scope": "layer", "normalize": "none", "sign": "signed", "recalibrate": "none"}
    assert settings_from([], {}, explicit) == [Setting.of("layer")]
    both = settings_from(["paper", "default"], {}, explicit)
    assert both == [PROTOCOLS["paper"], PROTOCOLS["default"]]
    grid = settings_from(["paper"], {"normalize": ["none", "mean"], "recalibrate": ["none", "bn"]}, explicit)
    assert len(grid) == 5 and grid[0] == PROTOCOLS["paper"]  # paper once, then 4 grid settings (scope layer)
    assert protocol_name(PROTOCOLS["default"].as_dict()) == "default"
    assert protocol_name({"scope": "layer"}) == ""
