"""The MACs floor of ``medprune compress``: a candidate rate r removes at least r of the units and r of the MACs.

A tiny VGG whose scores fall with depth is the measured failure case: a global ranking without normalisation removes
the wide, late layers first, whose feature maps are small, so r of the units removes much less than r of the MACs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import medprune.compression.search as steps_module
import medprune.runs.compress as compress_module
from medprune.checkpoint import save_checkpoint
from medprune.compression.card import SearchRow
from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import resolution_text
from medprune.compression.search import Workbench, candidate_masks, masks_at, search
from medprune.metrics import metrics_from_predictions, predict
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import coupled_groups, mask_model, model_cost, remove_units
from medprune.pruning.cost import CostCounter, MacsMeter
from medprune.pruning.masks import achieved_rate
from medprune.pruning.ranking import Ranking
from medprune.recovery.recipe import FinetuneRecipe
from medprune.rundir import RunDir
from medprune.rundir.errors import ConfigMismatchError
from medprune.runs.compress import CompressConfig, compress

RATES = [0.1, 0.3, 0.5, 0.7]

#: Random-init models: every rate passes by construction; the search mechanics are under test, not the rule.
MECHANICS = AcceptanceRule("accuracy", 0.9, rule="point", max_class_recall_drop=1.0)
POINT_RULE = {"decision_rule": "point", "max_class_recall_drop": 1.0}


def _vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vgg_small", num_classes=2, image_size=28).eval()


def _scores(model: torch.nn.Module, late_first: bool) -> dict[str, torch.Tensor]:
    """Scores that fall (``late_first``) or rise with depth; distinct inside a layer."""
    groups = unit_groups(model)
    generator = torch.Generator().manual_seed(1)
    return {
        g.name: (len(groups) - i if late_first else i + 1) + 0.1 * torch.rand(g.num_units, generator=generator)
        for i, g in enumerate(groups)
    }


def _bench(model: torch.nn.Module, tmp_path: Path, macs_floor: bool = True, min_keep: int = 1) -> Workbench:
    """A workbench for the search alone: random validation images, no recalibration, no training split."""
    generator = torch.Generator().manual_seed(2)
    val = (torch.randn(24, 3, 28, 28, generator=generator), torch.arange(24) % 2)
    names = ["a", "b"]
    probs, truth = predict(model, val)
    return Workbench(
        model=model,
        train=None,
        val=val,
        class_names=names,
        recalibration=None,
        couplings=coupled_groups(model),
        ranking=Ranking(min_keep=min_keep),
        recipe=FinetuneRecipe(distill=False),
        seed=0,
        device="cpu",
        out=tmp_path,
        baseline=metrics_from_predictions(probs, truth, names),
        baseline_predictions=probs.argmax(1),
        macs=MacsMeter(model) if macs_floor else None,
    )


def _macs(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """The card's count: MACs of the physically smaller model against the original's."""
    return 1 - model_cost(remove_units(model, masks))["macs"] / model_cost(model)["macs"]


def test_floor_raises_the_unit_rate_exactly_when_macs_lag(tmp_path: Path) -> None:
    model = _vgg()
    bench = _bench(model, tmp_path)
    total = sum(g.num_units for g in unit_groups(model))
    for late_first in (True, False):
        scores = _scores(model, late_first)
        for rate in RATES:
            plain = _macs(model, masks_at(bench, scores, rate))
            candidate = candidate_masks(bench, scores, rate)
            assert candidate.macs_removed == pytest.approx(_macs(model, candidate.masks))
            assert candidate.macs_removed >= rate  # the floor holds for every candidate
            assert achieved_rate(candidate.masks) >= rate - 0.5 / total
            if plain >= rate:
                assert (candidate.macs_floor, candidate.unit_rate) == ("met", rate)
                assert all(torch.equal(candidate.masks[k], m) for k, m in masks_at(bench, scores, rate).items())
            else:
                assert candidate.macs_floor == "raised" and candidate.unit_rate > rate
                count = round(candidate.unit_rate * total)
                assert _macs(model, masks_at(bench, scores, (count - 1) / total)) < rate  # the smallest count
        lagging = [rate for rate in RATES if _macs(model, masks_at(bench, scores, rate)) < rate]
        # the constructed case: late-first scores lag at every rate, early-first scores never do
        assert lagging == (RATES if late_first else [])


def test_floor_counts_what_physical_removal_removes(tmp_path: Path) -> None:
    model = _vgg()
    bench = _bench(model, tmp_path)
    candidate = candidate_masks(bench, _scores(model, late_first=True), 0.5)
    small = remove_units(mask_model(model, candidate.masks), candidate.masks)
    before, after = model_cost(model), model_cost(small)
    assert candidate.macs_removed == pytest.approx(1 - after["macs"] / before["macs"])
    assert 1 - after["macs"] / before["macs"] >= 0.5
    # the count from the masks alone (convolutions and linear layers only) is not the card's count
    assert CostCounter(model).removed(candidate.masks)["macs_removed_fraction"] != pytest.approx(candidate.macs_removed)


def test_unreachable_floor_uses_the_largest_allowed_unit_rate(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    model = _vgg()
    bench = _bench(model, tmp_path, min_keep=8)  # every layer keeps 8 units: at most 624 of 688 units go
    candidate = candidate_masks(bench, _scores(model, late_first=True), 0.95)
    total = sum(g.num_units for g in unit_groups(model))
    removable = sum(g.num_units - 8 for g in unit_groups(model))
    assert candidate.macs_floor == "unreachable" and candidate.unit_rate == removable / total
    assert candidate.macs_removed < 0.95
    assert achieved_rate(candidate.masks) == pytest.approx(removable / total)


def test_search_rows_record_the_unit_rate_and_macs_and_off_reproduces_old_rows(tmp_path: Path) -> None:
    model = _vgg()
    scores = _scores(model, late_first=True)
    old = _bench(model, tmp_path / "off", macs_floor=False)
    new = _bench(model, tmp_path / "on", macs_floor=True)
    keywords = dict(rule=MECHANICS, patience=10, epochs=0)
    rows_off = search(old, scores, RATES, path=tmp_path / "off.jsonl", **keywords)
    rows_on = search(new, scores, RATES, path=tmp_path / "on.jsonl", **keywords)
    for rate, off, on in zip(RATES, rows_off, rows_on):
        masks = masks_at(old, scores, rate)  # what the search did before the floor existed
        probs, truth = predict(mask_model(model, masks), old.val)
        value = metrics_from_predictions(probs, truth, ["a", "b"])["accuracy"]
        assert (off.rate, off.unit_rate, off.macs_floor) == (rate, rate, "off")
        assert off.achieved_rate == achieved_rate(masks) and off.value == pytest.approx(value)
        assert off.macs_removed is None and _macs(model, masks) < rate  # the old rows: no MACs, the plain cut
        assert on.rate == rate and on.macs_floor == "raised"
        assert on.unit_rate > rate and on.macs_removed >= rate
        assert on.achieved_rate == achieved_rate(candidate_masks(new, scores, rate).masks) > off.achieved_rate
    written = [json.loads(line) for line in (tmp_path / "on.jsonl").read_text().splitlines()]
    assert [(r["rate"], r["unit_rate"], r["macs_removed"]) for r in written] == [
        (r.rate, r.unit_rate, r.macs_removed) for r in rows_on
    ]


def test_search_reuses_rows_keyed_by_the_candidate_rate(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    model = _vgg()
    scores = _scores(model, late_first=True)
    bench = _bench(model, tmp_path)
    keywords = dict(rule=MECHANICS, patience=10, epochs=0, path=tmp_path / "search.jsonl")
    first = search(bench, scores, RATES[:2], **keywords)

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a stored row was measured again")

    monkeypatch.setattr(steps_module, "recover", fail)
    assert search(bench, scores, RATES[:2], **keywords) == first
    # a row written before the floor existed reads as cut at its own rate, floor off
    old = {"rate": 0.3, "achieved_rate": 0.3, "value": 0.5, "drop": 0.0, "within_tolerance": True, "metrics": {}}
    row = SearchRow(**old)
    assert (row.unit_rate, row.macs_removed, row.macs_floor) == (0.3, None, "off")


@pytest.fixture()
def vgg_checkpoint(tmp_path: Path) -> str:
    model = _vgg()
    meta = {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}}
    return str(save_checkpoint(tmp_path / "train" / "model", model, meta))


def test_card_shows_unit_rate_and_macs_removed(tmp_path: Path, vgg_checkpoint: str, data_root: Path) -> None:
    out = tmp_path / "out"
    options = dict(method="magnitude", rates=[0.3, 0.5], metric="accuracy", tolerance=0.9, **POINT_RULE)
    options.update(search_recovery="recalibrate", finetune_epochs=0, recalibration_samples=32, latency_repeats=1)
    result = compress(vgg_checkpoint, str(out), data_root=str(data_root), **options)
    card = json.loads((out / "card.json").read_text())
    text = (out / "card.md").read_text()
    assert "| rate | unit rate | units removed | MACs removed | MACs floor |" in text
    for row in card["search"]:
        assert row["macs_removed"] >= row["rate"] and row["unit_rate"] >= row["rate"]
        cells = [row[key] for key in ("rate", "unit_rate", "achieved_rate", "macs_removed")]
        assert "| " + " | ".join(f"{cell:.4f}" for cell in cells) + " |" in text
    chosen = card["search"][-1]
    assert card["choice"]["unit rate"] == chosen["unit_rate"] and card["choice"]["chosen rate"] == 0.5
    counted = _macs(_vgg(), result.masks)
    assert card["totals"]["MACs removed (fraction)"] == pytest.approx(counted) and counted >= 0.5
    assert card["choice"]["MACs removed (fraction, search masks)"] == pytest.approx(counted)


class _StopError(Exception):
    """Ends a compress run right after the resolution check (the search is not under test)."""


@pytest.mark.parametrize(("dataset", "warned"), [("breastmnist", True), ("pneumoniamnist", False)])
def test_resolution_warning_for_a_tiny_validation_split_only(
    tmp_path: Path,
    data_root: Path,
    monkeypatch,  # noqa: ANN001
    caplog,  # noqa: ANN001
    dataset: str,
    warned: bool,
) -> None:
    names = ["malignant", "normal, benign"] if dataset == "breastmnist" else ["normal", "pneumonia"]
    checkpoint = str(save_checkpoint(tmp_path / "model", _vgg(), {"class_names": names, "dataset": {"name": dataset}}))
    seen: dict[str, object] = {}

    def stop(bench, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["labels"] = bench.val[1]
        raise _StopError

    monkeypatch.setattr(compress_module, "search", stop)
    with caplog.at_level("WARNING", logger="medprune.compression.evidence"), pytest.raises(_StopError):
        compress(checkpoint, str(tmp_path / "out"), data_root=str(data_root), method="magnitude")
    warnings = [r.getMessage() for r in caplog.records if "validation resolution" in r.getMessage()]
    counts = torch.bincount(torch.as_tensor(seen["labels"]), minlength=2)
    steps = {name: 100 / (2 * int(n)) for name, n in zip(names, counts)}  # points per error of balanced accuracy
    assert (max(steps.values()) > 1.0) == warned  # the tolerance (1 point) against one error of the smallest class
    if warned:
        smallest = min(zip(counts.tolist(), names))[1]
        assert len(warnings) == 1 and f"below one error of class '{smallest}'" in warnings[0]
        assert all(f"'{name}' {step:.2f}" in warnings[0] for name, step in steps.items())
    else:
        assert warnings == []


def test_no_candidate_error_states_the_resolution() -> None:
    rows = [SearchRow(0.3, 0.3, 0.8, 0.03, False)]
    resolution, coarse = resolution_text({"malignant": 1 / 42, "benign": 1 / 114}, 0.01, "balanced_accuracy")
    assert coarse and resolution.endswith("the tolerance (1.00 points) is below one error of class 'malignant'")
    with pytest.raises(ValueError, match=r"within 0\.01 .*; validation resolution: one more error .*'malignant' 2\.38"):
        steps_module.choose(rows, AcceptanceRule("balanced_accuracy", 0.01, rule="point"), 0.85, resolution)
    assert resolution_text({"a": 1 / 500, "b": 1 / 300}, 0.01, "balanced_accuracy")[1] is False
    assert resolution_text({"a": 0.02, "b": 0.03}, 0.01, "accuracy")[0].endswith("below one error of every class")


def test_an_older_folder_resumes_only_with_the_floor_off(tmp_path: Path, vgg_checkpoint: str, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "old"
    config = compress_module.config_to_dict(CompressConfig(checkpoint=vgg_checkpoint, out=str(out)))
    del config["macs_floor"]  # a folder made before the option existed
    cosmetic = ("device", "latency_threads", "latency_repeats", "overwrite", "out")
    with RunDir(out, "compress", config, cosmetic=cosmetic):
        pass
    with pytest.raises(ConfigMismatchError, match="macs_floor: false -> true"):
        compress(vgg_checkpoint, str(out))

    def stop(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise _StopError

    monkeypatch.setattr(compress_module, "read_meta", stop)  # the first step inside the folder
    with pytest.raises(_StopError):
        compress(vgg_checkpoint, str(out), macs_floor=False)
