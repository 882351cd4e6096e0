"""int8 under ONNX Runtime: the quantized tiny model agrees with its fp32 export, the decision rule judges it against
the original as compress judges a candidate (a refused model is never shipped), equivalence and latency rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medprune.cli import compress as compress_cli
from medprune.cli.config_args import config_from_args
from medprune.cli.main import build_parser
from medprune.compression.config import CompressConfig
from medprune.compression.decision import AcceptanceRule
from medprune.deploy.calibration import ECE_BINS
from medprune.deploy.quantize import (
    CALIBRATION_SAMPLES,
    INT8_FILE,
    INT8_GAIN_WARNING,
    REFUSED_FILE,
    int8_speed_warning,
    judge_quantized,
    quantize_and_judge,
    quantize_int8,
)
from medprune.deploy.runtimes import equivalence, onnx_latency, onnx_logits, torch_logits
from medprune.metrics import metrics_from_predictions
from medprune.models import create_model
from medprune.pruning import export_onnx

pytest.importorskip("onnxruntime", reason="the onnx extra (medprune[onnx]) is not installed")
onnx = pytest.importorskip("onnx", reason="the onnx extra (medprune[onnx]) is not installed")

#: The stated agreement of int8 with fp32 predictions on the tiny model (measured 1.0 on 96 images).
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("int8")
    model = create_model("resnet_small", num_classes=2, image_size=28).eval()
    images = torch.randn(96, 3, 28, 28)
    fp32 = export_onnx(model, root / "model.onnx", images[:1])
    int8 = quantize_int8(fp32, root / "q" / "model.int8.onnx", images[:64])
    return {"model": model, "images": images, "fp32": fp32, "int8": int8, "root": root}


def test_int8_agrees_with_fp32_on_a_tiny_model(tiny: dict) -> None:
    held_out = tiny["images"][64:]  # not among the calibration images
    reference = torch_logits(tiny["model"], held_out)
    fp32, int8 = onnx_logits(tiny["fp32"], held_out), onnx_logits(tiny["int8"], held_out)
    assert np.abs(fp32 - reference).max() < 1e-4
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= MIN_AGREEMENT
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max() + 1e-3
    assert tiny["int8"].stat().st_size < tiny["fp32"].stat().st_size
    # the graph is QDQ: quantize/dequantize pairs around int8 weights
    ops = {node.op_type for node in onnx.load(str(tiny["int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_judge_uses_the_acceptance_rule_against_the_original() -> None:
    labels = np.array([0] * 40 + [1] * 40)
    names = ["a", "b"]
    rule = AcceptanceRule("balanced_accuracy", 0.05, rule="certified")
    logits = np.stack([1.0 - labels, labels.astype(float)], axis=1)  # perfect
    baseline = metrics_from_predictions(np.array([[1.0, 0.0]] * 40 + [[0.0, 1.0]] * 40), labels, names)
    kept = judge_quantized(rule, labels, labels, baseline, logits, names)
    verdict = rule.judge(labels, labels, labels, names, 0.0)
    assert kept["accepted"] is True and kept["why not"] == "" and kept["lower bound"] == verdict.lower_bound
    assert kept["drop"] == pytest.approx(0.0)
    wrong = logits.copy()
    wrong[:10] = wrong[:10, ::-1]  # 10 of class a now predicted b: recall of a falls by 0.25
    refused = judge_quantized(rule, labels, labels, baseline, wrong, names)
    assert refused["accepted"] is False and refused["drop"] == pytest.approx(0.125)
    assert "lower bound" in refused["why not"] and "class guard" in refused["why not"]
    assert refused["lower bound"] == rule.judge(labels, labels, wrong.argmax(1), names, 0.125).lower_bound


def test_a_refused_int8_model_is_not_shipped(tiny: dict, tmp_path: Path) -> None:
    images = tiny["images"][:48]
    predicted = onnx_logits(tiny["fp32"], images).argmax(1)
    labels = torch.as_tensor(predicted)  # the original is right on every image
    baseline = metrics_from_predictions(np.eye(2)[predicted], predicted, ["a", "b"])
    rule = AcceptanceRule("accuracy", 0.0, rule="certified")  # a zero tolerance certifies nothing
    record = quantize_and_judge(
        tiny["fp32"],
        tmp_path,
        images,
        calibration_source="random images",
        rule=rule,
        val=(images, labels),
        original_predictions=predicted,
        baseline=baseline,
        names=["a", "b"],
    )
    assert record["shipped"] is False and record["why not"]
    assert not (tmp_path / INT8_FILE).exists() and (tmp_path / REFUSED_FILE).is_file()
    assert record["file"] == REFUSED_FILE and record["calibration"]["images"] == 48
    loose = AcceptanceRule("accuracy", 0.9, rule="point", max_class_recall_drop=1.0)
    kept = quantize_and_judge(
        tiny["fp32"],
        tmp_path / "kept",
        images,
        calibration_source="random images",
        rule=loose,
        val=(images, labels),
        original_predictions=predicted,
        baseline=baseline,
        names=["a", "b"],
    )
    assert kept["shipped"] is True and (tmp_path / "kept" / INT8_FILE).is_file()


def test_equivalence_of_a_hand_made_example() -> None:
    labels = np.array([0, 0, 1, 1])
    reference = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    other = reference.copy()
    other[1] = [0.0, 0.5]  # one image of class 0 flips to 1
    result = equivalence(labels, {"ref": reference, "other": other}, ["x", "y"], reference="ref")
    assert result["ref"]["max |logit difference|"] == 0 and result["ref"]["agreement"] == 1
    assert result["other"]["max |logit difference|"] == pytest.approx(1.0)
    assert result["other"]["agreement"] == pytest.approx(0.75)
    assert result["other"]["accuracy change"] == pytest.approx(-0.25)
    assert [c["sensitivity change"] for c in result["other"]["per_class"]] == pytest.approx([-0.5, 0.0])
    with pytest.raises(ValueError, match="reference"):
        equivalence(labels, {"ref": reference}, ["x", "y"], reference="nope")


def test_latency_rows_state_batch_threads_and_repeats(tiny: dict) -> None:
    rows = onnx_latency({"fp32": tiny["fp32"], "int8": tiny["int8"]}, tiny["images"][:1], repeats=3, threads=1)
    assert [(r["batch"], r["model"]) for r in rows] == [(1, "fp32"), (1, "int8"), (32, "fp32"), (32, "int8")]
    for row in rows:
        assert row["threads"] == 1 and row["repeats"] == 3
        assert 0 < row["IQR ms"][0] <= row["median ms"] <= row["IQR ms"][1]
        assert row["CPU median ms"] > 0


def test_qoperator_layout_writes_integer_operators_that_agree(tiny: dict) -> None:
    path = quantize_int8(
        tiny["fp32"], tiny["root"] / "qop" / "model.onnx", tiny["images"][:64], quant_format="QOperator"
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "QLinearConv" in ops and "DequantizeLinear" in ops  # integer kernels in the file; fp32 logits out
    held_out = tiny["images"][64:]
    layouts = [onnx_logits(p, held_out).argmax(1) for p in (tiny["int8"], path)]
    assert (layouts[0] == layouts[1]).mean() >= MIN_AGREEMENT
    with pytest.raises(ValueError, match="quant_format='QInt8' is not allowed; valid values: QDQ, QOperator"):
        quantize_int8(tiny["fp32"], tiny["root"] / "x.onnx", tiny["images"][:8], quant_format="QInt8")  # type: ignore[arg-type]


def test_compress_defaults_are_the_deploy_defaults() -> None:
    # compression does not import deploy (deploy reads compression's rule): the defaults are kept equal here
    config = CompressConfig(checkpoint="x")
    assert (config.calibration_samples, config.ece_bins) == (CALIBRATION_SAMPLES, ECE_BINS)


def test_compress_command_line_takes_the_deploy_flags() -> None:
    argv = ["compress", "ck", "--quantize", "int8", "--calibrate", "temperature", "--export", "monai"]
    args = build_parser().parse_args([*argv, "--calibration-samples", "64"])
    config = config_from_args(args, CompressConfig, compress_cli.FLAGS, checkpoint="ck")
    assert (config.quantize, config.calibrate, config.export, config.calibration_samples) == (
        "int8",
        "temperature",
        "monai",
        64,
    )
    bad = build_parser().parse_args(["compress", "ck", "--quantize", "int4"])
    with pytest.raises(ValueError, match="quantize.*int4.*valid values: none, int8"):
        config_from_args(bad, CompressConfig, compress_cli.FLAGS, checkpoint="ck")


def _timed(fp32_ms: float, int8_ms: float) -> list[dict]:
    return [
        {"batch": batch, "threads": 2, "repeats": 20, "model": model, "median ms": ms * batch}
        for batch in (1, 32)
        for model, ms in (("original fp32", 0.2), ("compressed fp32", fp32_ms), ("compressed int8", int8_ms))
    ]


def test_the_card_warns_when_int8_bought_no_speed() -> None:
    sizes = {"fp32": 80301, "int8": 50544}
    slow = int8_speed_warning({"shipped": True, "latency": _timed(0.100, 0.103), "bytes": sizes})
    assert slow is not None
    assert slow.startswith("int8: 0.97x the speed of the compressed fp32 model at batch 1 (ONNX Runtime, 2 thread(s)")
    assert "63% of the fp32 file's size" in slow
    # a gain at or above the threshold, a refused int8 model, or no timing: nothing to warn about
    assert (
        int8_speed_warning({"shipped": True, "latency": _timed(0.100, 0.100 / INT8_GAIN_WARNING), "bytes": sizes})
        is None
    )
    assert int8_speed_warning({"shipped": False, "latency": _timed(0.100, 0.2), "bytes": sizes}) is None
    assert int8_speed_warning({"shipped": True}) is None
