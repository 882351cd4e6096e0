"""int8 on top of pruning: ONNX Runtime static quantization of an exported fp32 model, calibrated on clean training
images, and the decision whether the int8 model ships (the same acceptance rule as the fp32 model, on validation).

Quantization (``onnxruntime.quantization.quantize_static``): QDQ format, int8 weights per output channel, uint8
activations per tensor (ranges by MinMax over the calibration images), after ONNX Runtime's pre-processing (shape
inference and graph optimisation). onnxruntime is an optional extra (``medprune[onnx]``), imported inside.

>>> # quantize_int8("out/model.onnx", "out/model.int8.onnx", calibration_images)  # (N, C, H, W) float32 images
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor, nn

from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import metric_value
from medprune.deploy.runtimes import equivalence, latency_row, onnx_latency, onnx_logits, torch_logits
from medprune.metrics import metrics_from_predictions
from medprune.provenance import file_sha256
from medprune.pruning.export import export_onnx

logger = logging.getLogger(__name__)

__all__ = [
    "QUANTIZATION",
    "QuantFormatName",
    "CALIBRATION_SAMPLES",
    "INT8_FILE",
    "REFUSED_FILE",
    "quantize_int8",
    "judge_quantized",
    "probabilities",
    "quantize_and_judge",
    "runtime_evidence",
    "ort_latency",
    "INT8_GAIN_WARNING",
    "int8_speed_warning",
]

#: What :func:`quantize_int8` does, as the card states it.
QUANTIZATION = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weights": "int8, per output channel (symmetric)",
    "activations": "uint8, per tensor",
    "calibration method": "MinMax",
}
#: ONNX Runtime's two layouts of a quantized graph: QuantizeLinear/DequantizeLinear pairs around float operators,
#: fused into integer kernels when the session loads (``QDQ``, the default), or integer operators written into the
#: file (``QOperator``: QLinearConv, ...). Measured alike on the MedMNIST models (bench/quantize_results.md).
QuantFormatName = Literal["QDQ", "QOperator"]
#: Clean training images the activation ranges are calibrated on (a stratified subset).
CALIBRATION_SAMPLES = 256
#: The shipped int8 model's file name, and the name a refused one is kept under (for inspection, not shipped).
INT8_FILE = "model.int8.onnx"
REFUSED_FILE = "refused.int8.onnx"


def quantize_int8(
    fp32: str | Path,
    int8: str | Path,
    images: Tensor,
    batch_size: int = 32,
    quant_format: QuantFormatName = "QDQ",
    *,
    per_channel: bool = True,
    keep_float: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
) -> Path:
    """Quantize the ONNX model ``fp32`` into ``int8`` (see the module docstring for the scheme).

    Args:
        fp32: the exported float32 model (input ``images``). int8: where the quantized model goes.
        images: (N, C, H, W) calibration images, preprocessed as the model expects (clean training images).
        batch_size: images per calibration pass.
        quant_format: the graph's layout (:data:`QuantFormatName`; the card's scheme is ``QDQ``).
        per_channel, keep_float, op_types: departures from the card's scheme that bench/quantize.py measures: int8
            weights per tensor instead of per output channel; ONNX node names left in float (after ONNX Runtime's
            pre-processing, which keeps the exporter's node names); only these operator types quantized (``None``:
            every type ONNX Runtime can).

    Returns:
        The path written.
    """
    from onnxruntime.quantization import (  # optional extra
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant_format not in ("QDQ", "QOperator"):
        raise ValueError(f"quant_format={quant_format!r} is not allowed; valid values: QDQ, QOperator")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": array[i : i + batch_size]} for i in range(0, len(array), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    int8 = Path(int8)
    int8.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8),
            Reader(),
            quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=list(keep_float),
            op_types_to_quantize=list(op_types) if op_types is not None else None,
        )
    logger.info("quantized %s to int8 (%d calibration images): %s", fp32, len(array), int8)
    return int8


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of (N, K) logits (float64)."""
    shifted = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def judge_quantized(
    rule: AcceptanceRule,
    labels: np.ndarray,
    original_predictions: np.ndarray,
    baseline: Mapping[str, Any],
    quantized_logits: np.ndarray,
    names: Sequence[str],
) -> dict[str, Any]:
    """Whether the int8 model passes ``rule`` against the original (unpruned, fp32) model on validation, as every
    compress candidate does: :meth:`~medprune.compression.decision.AcceptanceRule.judge` with the int8 model's
    predicted classes against the original's.

    Args:
        rule: the compress run's acceptance rule. labels: the validation classes. original_predictions: the original
            model's predicted classes there. baseline: the original's validation metrics. quantized_logits: the int8
            model's validation logits. names: class names.

    Returns:
        ``metric``, ``tolerance``, ``rule``, ``baseline``, ``value``, ``drop``, ``lower bound``, ``class guard``,
        ``accepted`` and ``why not`` (empty when accepted).
    """
    metrics = metrics_from_predictions(probabilities(quantized_logits), np.asarray(labels), list(names))
    value, base = metric_value(metrics, rule.metric), metric_value(baseline, rule.metric)
    drop = None if value is None or base is None else base - value
    verdict = rule.judge(labels, original_predictions, quantized_logits.argmax(1), names, drop)
    reasons = []
    if rule.rule == "certified" and not (verdict.lower_bound is not None and verdict.lower_bound > -rule.tolerance):
        reasons.append(
            f"the {rule.confidence:.0%} lower bound of the {rule.metric.replace('_', ' ')} change against the original "
            f"({_number(verdict.lower_bound)}) is not above -{rule.tolerance:g}"
        )
    if rule.rule == "point" and not rule.within_tolerance(drop):
        reasons.append(f"the {rule.metric.replace('_', ' ')} drop ({_number(drop)}) exceeds {rule.tolerance:g}")
    reasons += [f"class guard: {g}" for g in verdict.class_guard]
    return {
        "metric": rule.metric,
        "tolerance": rule.tolerance,
        "rule": rule.rule,
        "baseline": base,
        "value": value,
        "drop": drop,
        "lower bound": verdict.lower_bound,
        "class guard": list(verdict.class_guard),
        "accepted": verdict.accepted,
        "why not": "; ".join(reasons) if not verdict.accepted else "",
    }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def quantize_and_judge(
    fp32: Path,
    out: Path,
    calibration: Tensor,
    *,
    calibration_source: str,
    rule: AcceptanceRule,
    val: tuple[Tensor, Tensor],
    original_predictions: np.ndarray,
    baseline: Mapping[str, Any],
    names: Sequence[str],
) -> dict[str, Any]:
    """Quantize ``fp32`` to int8 and decide on validation whether it ships (:func:`judge_quantized`); a refused
    model is kept as :data:`REFUSED_FILE`, never as :data:`INT8_FILE`.

    Args:
        fp32: the exported compressed model. out: the output folder. calibration: the calibration images.
        calibration_source: where they come from, as the card states it. rule, original_predictions, baseline,
            names: as for :func:`judge_quantized`. val: the validation images and classes.

    Returns:
        The card's ``quantization`` record: the scheme, ``calibration`` (images, source), ``validation`` (the
        judgement), ``shipped``, ``why not``, ``file`` and its ``sha256``, and the ONNX file sizes in bytes.
    """
    path = quantize_int8(fp32, out / INT8_FILE, calibration)
    judged = judge_quantized(rule, val[1].numpy(), original_predictions, baseline, onnx_logits(path, val[0]), names)
    shipped = bool(judged["accepted"])
    if not shipped:
        os.replace(path, out / REFUSED_FILE)
        path = out / REFUSED_FILE
        logger.warning("int8 model not shipped: %s", judged["why not"])
    return {
        **QUANTIZATION,
        "calibration": {"images": int(len(calibration)), "source": calibration_source},
        "validation": judged,
        "shipped": shipped,
        "why not": judged["why not"],
        "file": path.name,
        "sha256": file_sha256(path),
        "bytes": {"fp32": Path(fp32).stat().st_size, "int8": path.stat().st_size},
    }


def runtime_evidence(
    compressed: nn.Module,
    fp32: Path,
    int8: Path,
    splits: Mapping[str, tuple[Tensor, Tensor]],
    names: Sequence[str],
) -> dict[str, Any]:
    """Equivalence across runtimes on each split: PyTorch fp32 (the reference), ONNX Runtime fp32 and int8
    (:func:`~medprune.deploy.runtimes.equivalence`).

    Args:
        compressed: the compressed PyTorch model. fp32, int8: its ONNX files. splits: split name -> (images,
            classes). names: class names.
    """
    evidence = {}
    for split, (images, labels) in splits.items():
        logits = {
            "PyTorch fp32": torch_logits(compressed, images),
            "ONNX Runtime fp32": onnx_logits(fp32, images),
            "ONNX Runtime int8": onnx_logits(int8, images),
        }
        evidence[split] = equivalence(labels.numpy(), logits, names, reference="PyTorch fp32")
    return evidence


def ort_latency(
    original: nn.Module, fp32: Path, int8: Path, example: Tensor, *, threads: int, repeats: int
) -> list[dict[str, Any]]:
    """ONNX Runtime latency of the original fp32, compressed fp32 and compressed int8 model, batch 1 and 32, timed
    interleaved (:func:`~medprune.deploy.runtimes.onnx_latency`); the original is exported to a scratch folder."""
    with tempfile.TemporaryDirectory() as scratch:
        original_onnx = export_onnx(original, Path(scratch) / "original.onnx", example[:1])
        paths = {"original fp32": original_onnx, "compressed fp32": fp32, "compressed int8": int8}
        return onnx_latency(paths, example, threads=threads, repeats=repeats)


#: Below this batch-1 speed-up (compressed fp32 / int8 under ONNX Runtime) the card warns that int8 bought no speed
#: on the machine that measured it: a ratio this close to 1 is within the run-to-run spread of the timing.
INT8_GAIN_WARNING = 1.1


def int8_speed_warning(quantization: Mapping[str, Any]) -> str | None:
    """The card's warning when a shipped int8 model is not faster than the compressed fp32 one at batch 1 (below
    :data:`INT8_GAIN_WARNING`), with what it still gains (file size); ``None`` otherwise or when nothing was timed.
    """
    if not quantization.get("shipped"):
        return None
    rows = quantization.get("latency") or []
    fp32, int8 = latency_row(rows, 1, "compressed fp32"), latency_row(rows, 1, "compressed int8")
    if not fp32 or not int8 or int8["median ms"] <= 0:
        return None
    gain = fp32["median ms"] / int8["median ms"]
    if gain >= INT8_GAIN_WARNING:
        return None
    sizes = quantization.get("bytes") or {}
    smaller = (
        f"; it is {sizes['int8'] / sizes['fp32']:.0%} of the fp32 file's size"
        if sizes.get("fp32") and sizes.get("int8")
        else ""
    )
    return (
        f"int8: {gain:.2f}x the speed of the compressed fp32 model at batch 1 (ONNX Runtime, {fp32['threads']} "
        f"thread(s), median of {fp32['repeats']} interleaved runs on the machine that compressed it), below "
        f"{INT8_GAIN_WARNING}x{smaller}; time both on the target CPU before choosing int8 for speed"
    )
