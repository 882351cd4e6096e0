"""The deployment evidence of a compress card is the measured one: one small compress run (random-init resnet_small
on real PneumoniaMNIST) with temperature scaling, and every calibration number recomputed here from the written
model and the test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.checkpoint.with_data import splits_for_checkpoint
from medprune.data import stack_samples
from medprune.deploy.calibration import expected_calibration_error, fit_temperature, softmax_with_temperature
from medprune.deploy.runtimes import torch_logits
from medprune.models import create_model
from medprune.runs.compress import compress

DEPLOY = dict(
    method="magnitude",
    rate=0.3,
    metric="accuracy",
    tolerance=0.9,  # a random-init model: the mechanics are under test
    decision_rule="point",
    max_class_recall_drop=1.0,
    search_recovery="recalibrate",
    finetune_epochs=1,
    max_train_samples=32,
    recalibration_samples=32,
    batch_size=16,
    latency_repeats=1,
    calibrate="temperature",
    ece_bins=10,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("deploy")
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    checkpoint = str(save_checkpoint(root / "train" / "model", model, meta))
    out = root / "out"
    result = compress(checkpoint, str(out), data_root=str(data_root), **DEPLOY)
    splits = splits_for_checkpoint(
        json.loads(Path(checkpoint).with_suffix(".json").read_text()), data_root=str(data_root)
    )
    return {"checkpoint": checkpoint, "out": out, "result": result, "splits": splits}


def test_calibration_numbers_are_recomputed_from_the_written_model(run: dict[str, Any]) -> None:
    card = json.loads((run["out"] / "card.json").read_text())
    calibration = card["calibration"]
    splits = run["splits"]
    test = stack_samples(splits.test, range(len(splits.test)))
    val = stack_samples(splits.val, range(len(splits.val)))
    small, _ = load_checkpoint(run["out"] / "model.safetensors")
    original, _ = load_checkpoint(run["checkpoint"])
    labels = test[1].numpy()
    assert calibration["bins"] == 10 and calibration["split"] == "test" and calibration["images"] == len(labels)
    for label, model in (("original", original), ("compressed", small)):
        ece = expected_calibration_error(softmax_with_temperature(torch_logits(model, test[0])), labels, bins=10)
        assert calibration["ece"][label] == pytest.approx(ece, abs=1e-9)
    temperature = fit_temperature(torch_logits(small, val[0]), val[1].numpy())
    assert calibration["temperature"] == pytest.approx(temperature, rel=1e-6)
    scaled = softmax_with_temperature(torch_logits(small, test[0]), temperature)
    assert calibration["ece"]["compressed, temperature-scaled"] == pytest.approx(
        expected_calibration_error(scaled, labels, bins=10), abs=1e-9
    )
    assert (run["out"] / calibration["diagram"]).read_bytes()[:4] == b"\x89PNG"
    assert sum(b["count"] for b in calibration["reliability"]["original"]) == len(labels)


def test_card_records_what_the_model_was_derived_from(run: dict[str, Any]) -> None:
    card = json.loads((run["out"] / "card.json").read_text())
    meta = json.loads(Path(run["checkpoint"]).with_suffix(".json").read_text())
    assert card["base_model"] == {"name": "model.safetensors", "sha256": meta["weights_sha256"]}
    assert card["relation"] == "pruned"
    assert card["preprocessing"]["image size"] == 28 and card["preprocessing"]["channels"] == 3
    transform = run["splits"].test.transform  # the sidecar of a hand-made checkpoint has no normalisation
    assert card["preprocessing"]["mean"] == pytest.approx(list(transform.mean))
    assert np.isfinite(card["totals"]["MACs removed (fraction)"])  # the keys the README's figures read are kept
