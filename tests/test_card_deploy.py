"""The deployment evidence of a compress card is the measured one: one small compress run (random-init resnet_small
on real PneumoniaMNIST) with temperature scaling and int8, and every calibration and int8 number recomputed here from
the written models and the splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.checkpoint.with_data import splits_for_checkpoint
from medprune.cli.main import main
from medprune.compression.card_page import milliseconds, percent, score
from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import predictions_and_metrics
from medprune.data import stack_samples
from medprune.deploy.calibration import expected_calibration_error, fit_temperature, softmax_with_temperature
from medprune.deploy.quantize import INT8_FILE, INT8_GAIN_WARNING, int8_speed_warning, judge_quantized
from medprune.deploy.runtimes import latency_row, onnx_logits, torch_logits
from medprune.models import create_model
from medprune.report.heatmaps import pearson, pick_images, relevance
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
    quantize="int8",
    calibration_samples=40,
    export="monai",
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
    return {"checkpoint": checkpoint, "out": out, "result": result, "splits": splits, "data_root": str(data_root)}


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
    assert card["relation"] == ("pruned+quantized" if card["quantization"]["shipped"] else "pruned")
    assert card["preprocessing"]["image size"] == 28 and card["preprocessing"]["channels"] == 3
    transform = run["splits"].test.transform  # the sidecar of a hand-made checkpoint has no normalisation
    assert card["preprocessing"]["mean"] == pytest.approx(list(transform.mean))
    assert np.isfinite(card["totals"]["MACs removed (fraction)"])  # the keys the README's figures read are kept


def test_int8_decision_and_equivalence_are_recomputed(run: dict[str, Any]) -> None:
    card = json.loads((run["out"] / "card.json").read_text())
    quantization = card["quantization"]
    splits, names = run["splits"], ["normal", "pneumonia"]
    val = stack_samples(splits.val, range(len(splits.val)))
    test = stack_samples(splits.test, range(len(splits.test)))
    int8 = run["out"] / quantization["file"]
    assert quantization["calibration"]["images"] == 40 and quantization["format"] == "QDQ"
    assert quantization["shipped"] is True and int8.name == INT8_FILE  # tolerance 0.9: the mechanics
    assert card["hashes"]["onnx int8"] == quantization["sha256"]
    original, _ = load_checkpoint(run["checkpoint"])
    predicted, baseline = predictions_and_metrics(original, val, names)
    rule = AcceptanceRule("accuracy", 0.9, rule="point", max_class_recall_drop=1.0)
    judged = judge_quantized(rule, val[1].numpy(), predicted, baseline, onnx_logits(int8, val[0]), names)
    for key in ("baseline", "value", "drop", "lower bound"):
        assert quantization["validation"][key] == pytest.approx(judged[key], abs=1e-12), key
    assert quantization["validation"]["accepted"] == judged["accepted"]
    small, _ = load_checkpoint(run["out"] / "model.safetensors")
    for split, (images, _) in (("validation", val), ("test", test)):
        reference, quantized = torch_logits(small, images), onnx_logits(int8, images)
        row = quantization["equivalence"][split]["ONNX Runtime int8"]
        assert row["agreement"] == pytest.approx((reference.argmax(1) == quantized.argmax(1)).mean())
        assert row["max |logit difference|"] == pytest.approx(np.abs(reference - quantized).max(), rel=1e-6)
        fp32 = quantization["equivalence"][split]["ONNX Runtime fp32"]
        assert fp32["max |logit difference|"] < 1e-4 and fp32["agreement"] == 1.0
    models = [(r["batch"], r["model"]) for r in quantization["latency"]]
    assert models == [(b, m) for b in (1, 32) for m in ("original fp32", "compressed fp32", "compressed int8")]
    assert {r["threads"] for r in quantization["latency"]} == {card["config"]["latency_threads"]}
    text = (run["out"] / "card.md").read_text()
    assert "int8 (ONNX Runtime static quantization): shipped" in text


def test_quantize_command_on_a_compress_folder(run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = run["out"].parent / "quantize"
    argv = [
        "quantize",
        str(run["out"]),
        "--out",
        str(out),
        "--calibration-samples",
        "24",
        "--data-root",
        run["data_root"],
    ]
    assert main([*argv, "--set", "latency_repeats=2", "--set", "ece_bins=10"]) == 0
    document = json.loads((out / "quantization.json").read_text())
    record = document["quantization"]
    # the compress run's rule (point, tolerance 0.9, no class guard) judged it, against the unpruned checkpoint
    assert record["validation"]["rule"] == "point" and record["validation"]["tolerance"] == 0.9
    meta = json.loads(Path(run["checkpoint"]).with_suffix(".json").read_text())
    assert document["base_model"]["sha256"] == meta["weights_sha256"]
    assert record["calibration"]["images"] == 24 and record["shipped"] is True
    assert document["relation"] == "pruned+quantized" and (out / INT8_FILE).is_file()
    splits = run["splits"]
    test = stack_samples(splits.test, range(len(splits.test)))
    int8_ece = expected_calibration_error(
        softmax_with_temperature(onnx_logits(out / INT8_FILE, test[0])), test[1].numpy(), bins=10
    )
    assert document["calibration"]["ece"]["compressed int8"] == pytest.approx(int8_ece, abs=1e-9)
    printed = capsys.readouterr().out
    assert "int8 shipped" in printed and f"{int8_ece:.3f}" in printed
    # the card's "int8 bought no speed" warning follows the measured batch-1 latencies, in all three places
    fp32_ms, int8_ms = (
        latency_row(record["latency"], 1, m)["median ms"] for m in ("compressed fp32", "compressed int8")
    )
    slow = fp32_ms / int8_ms < INT8_GAIN_WARNING
    assert record["warnings"] == ([int8_speed_warning(record)] if slow else [])
    assert ("warning: int8:" in printed) is slow
    assert ("**Warning:** int8:" in (out / "quantization.md").read_text()) is slow
    assert main(["quantize", str(run["out"].parent / "nothing"), "--out", str(out / "x")]) == 2


def test_card_for_a_person_shows_the_measured_decision(run: dict[str, Any]) -> None:
    card = json.loads((run["out"] / "card.json").read_text())
    text = (run["out"] / "card.md").read_text()
    decision = text.split("## Decision")[1].split("## Preprocessing")[0]
    assert "- **Shipped:** the int8 model `model.int8.onnx` (pruned+quantized from `model.safetensors`" in decision
    assert f"{percent(card['totals']['MACs removed (fraction)'])} of the multiply-accumulates removed" in decision
    latency = {(r["batch"], r["model"]): r["median ms"] for r in card["quantization"]["latency"]}
    assert f"-> {milliseconds(latency[(1, 'compressed int8')])} ms (int8, " in decision
    for label, value in card["calibration"]["ece"].items():
        assert f"{label} {score(value)}" in decision
    assert text.index("## Decision") < text.index("## Preprocessing") < text.index("## Intended use")
    assert "28 x 28 pixels" in text.split("## Preprocessing")[1]
    page = (run["out"] / "card.html").read_text()
    assert "<h2>Decision</h2>" in page and "data:image/png;base64," in page  # the reliability diagram, embedded


def test_explanation_drift_is_recomputed_from_the_written_models(run: dict[str, Any]) -> None:
    card = json.loads((run["out"] / "card.json").read_text())
    drift = card["explanations"]
    splits = run["splits"]
    test = stack_samples(splits.test, range(len(splits.test)))
    assert drift["images per class"] == 8 and drift["indices"] == pick_images(test[1].numpy(), 8, seed=0)
    x, y = test[0][drift["indices"]], test[1][drift["indices"]]
    small, _ = load_checkpoint(run["out"] / "model.safetensors")
    original, _ = load_checkpoint(run["checkpoint"])
    r = pearson(relevance(original, x, y), relevance(small, x, y))
    assert drift["per_image"] == pytest.approx(r.tolist(), abs=1e-6)
    for c, row in enumerate(drift["per_class"]):
        mine = r[y.numpy() == c]
        assert row["n"] == 8 and row["median"] == pytest.approx(float(np.median(mine)), abs=1e-6)
        assert row["IQR"] == pytest.approx(np.percentile(mine, [25, 75]).tolist(), abs=1e-6)
        assert row["mean"] == pytest.approx(float(mine.mean()), abs=1e-6)
    assert "explanations" in card["timings"]
    decision = (run["out"] / "card.md").read_text().split("## Preprocessing")[0]
    first = drift["per_class"][0]
    assert f"{first['class']} {score(first['median'])} [{score(first['IQR'][0])}, {score(first['IQR'][1])}]" in decision
    assert "<h3>Explanations on test" in (run["out"] / "card.html").read_text()


def test_monai_bundle_of_the_shipped_model(run: dict[str, Any]) -> None:
    folder = run["out"] / "bundle"
    card = json.loads((run["out"] / "card.json").read_text())
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    assert metadata["medprune"]["relation"] == card["relation"] == "pruned+quantized"
    assert metadata["medprune"]["base_model"] == card["base_model"]
    int8 = card["quantization"]["equivalence"]["test"]["ONNX Runtime int8"]
    assert metadata["eval_metrics"] == {f"test {k} (int8)": int8[k] for k in ("accuracy", "balanced_accuracy")}
    assert (folder / "models" / INT8_FILE).read_bytes() == (run["out"] / INT8_FILE).read_bytes()
    assert (folder / "docs" / "README.md").read_text() == (run["out"] / "card.md").read_text()
    assert (folder / "docs" / "reliability.png").is_file()
    scripted = torch.jit.load(str(folder / "models" / "model.ts"))
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), run["result"].model(x))
