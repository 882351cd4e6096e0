"""The same model under two runtimes: logits from PyTorch and from ONNX Runtime, how far they agree, and ONNX
Runtime latency of several models timed interleaved.

onnxruntime is an optional extra (``medprune[onnx]``): it is imported inside the functions that run a session.

>>> y = np.array([0, 1, 1])
>>> ref = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
>>> equivalence(y, {"pytorch": ref, "onnx": ref + 0.5}, ["a", "b"], reference="pytorch")["onnx"]["agreement"]
1.0
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.compression.evidence import class_rates
from medprune.metrics import metrics_from_predictions
from medprune.runtime import eval_mode

__all__ = ["torch_logits", "onnx_session", "onnx_logits", "equivalence", "onnx_latency", "latency_row", "latency_ms"]


def torch_logits(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> np.ndarray:
    """Logits (float64 array N x K) of ``model`` on the CPU over pre-stacked ``inputs``, in eval mode."""
    with eval_mode(model), torch.inference_mode():
        parts = [model(inputs[i : i + batch_size]).double().cpu().numpy() for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts)


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads, one inter-op thread, sequential
    execution and every graph optimisation (so QDQ int8 nodes are fused into integer kernels)."""
    import onnxruntime as ort  # optional extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, inputs: Tensor, batch_size: int = 256, threads: int = 1) -> np.ndarray:
    """Logits (float64 array N x K) of the ONNX model at ``path`` (input ``images``, output ``logits``)."""
    session = onnx_session(path, threads)
    array = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32)
    parts = [
        session.run(["logits"], {"images": array[i : i + batch_size]})[0] for i in range(0, len(array), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def equivalence(
    labels: np.ndarray, logits: Mapping[str, np.ndarray], names: Sequence[str], *, reference: str
) -> dict[str, dict[str, Any]]:
    """How far each runtime's model agrees with ``reference`` on the same images.

    Args:
        labels: true classes. logits: runtime label -> (N, K) logits. names: class names. reference: which entry
            the others are compared with.

    Returns:
        runtime label -> ``max |logit difference|`` (against the reference), ``agreement`` (fraction of images with
        the same predicted class), ``accuracy`` / ``balanced_accuracy`` and their change, and ``per_class``: each
        class's sensitivity and its change.
    """
    if reference not in logits:
        raise ValueError(f"reference={reference!r} is not one of the runtimes: {', '.join(logits)}")
    labels = np.asarray(labels)
    summary: dict[str, dict[str, Any]] = {}
    base = _metrics(labels, logits[reference], names)
    for label, values in logits.items():
        mine = _metrics(labels, values, names)
        summary[label] = {
            "max |logit difference|": float(np.abs(values - logits[reference]).max()),
            "agreement": float((values.argmax(1) == logits[reference].argmax(1)).mean()),
            "accuracy": mine["accuracy"],
            "accuracy change": _change(mine["accuracy"], base["accuracy"]),
            "balanced_accuracy": mine["balanced_accuracy"],
            "balanced_accuracy change": _change(mine["balanced_accuracy"], base["balanced_accuracy"]),
            "per_class": [
                {"class": c, "sensitivity": s, "sensitivity change": _change(s, base["sensitivity"][c])}
                for c, s in mine["sensitivity"].items()
            ],
        }
    return summary


def _metrics(labels: np.ndarray, logits: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    metrics = metrics_from_predictions(shifted / shifted.sum(1, keepdims=True), labels, list(names))
    rates = class_rates(labels, logits.argmax(1), names)
    return {
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "sensitivity": {r.name: r.sensitivity for r in rates},
    }


def _change(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def onnx_latency(
    paths: Mapping[str, str | Path],
    example: Tensor,
    *,
    batches: Sequence[int] = (1, 32),
    threads: int = 1,
    repeats: int = 20,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """ONNX Runtime CPU latency (ms per batch) of several models, timed interleaved: after ``warmup`` untimed passes
    of each, every repeat runs each model once, the order rotating by one each repeat, so drifts of a shared machine
    fall on all alike.

    Args:
        paths: model label -> ONNX file. example: one image (1, C, H, W) repeated to each batch size.
        batches: batch sizes. threads: intra-op threads of each session. repeats: timed passes of each model per
            batch. warmup: untimed passes first.

    Returns:
        One row per batch and model: ``batch``, ``threads``, ``repeats``, ``model``, ``median ms``, ``IQR ms``
        (25th and 75th percentile of the wall times) and ``CPU median ms`` (the process's CPU time per pass: above
        the wall time when other threads work, below it when the process waited).
    """
    sessions = {label: onnx_session(path, threads) for label, path in paths.items()}
    labels = list(sessions)
    rows = []
    for batch in batches:
        array = np.ascontiguousarray(example[:1].repeat(batch, 1, 1, 1).cpu().numpy(), dtype=np.float32)
        feed = {"images": array}
        for _ in range(warmup):
            for label in labels:
                sessions[label].run(["logits"], feed)
        times: dict[str, list[float]] = {label: [] for label in labels}
        cpu: dict[str, list[float]] = {label: [] for label in labels}
        for repeat in range(repeats):
            shift = repeat % len(labels)
            for label in labels[shift:] + labels[:shift]:
                started, started_cpu = time.perf_counter(), time.process_time()
                sessions[label].run(["logits"], feed)
                times[label].append((time.perf_counter() - started) * 1000)
                cpu[label].append((time.process_time() - started_cpu) * 1000)
        for label in labels:
            low, high = np.percentile(times[label], [25, 75])
            rows.append(
                {
                    "batch": batch,
                    "threads": threads,
                    "repeats": repeats,
                    "model": label,
                    "median ms": float(statistics.median(times[label])),
                    "IQR ms": [float(low), float(high)],
                    "CPU median ms": float(statistics.median(cpu[label])),
                }
            )
    return rows


def latency_row(rows: Sequence[Mapping[str, Any]], batch: int, model: str) -> dict[str, Any] | None:
    """The :func:`onnx_latency` row of ``model`` at ``batch`` (``None`` when it was not timed)."""
    return next((dict(row) for row in rows if row["batch"] == batch and row["model"] == model), None)


def latency_ms(rows: Sequence[Mapping[str, Any]], batch: int, model: str) -> float | None:
    """The median milliseconds of :func:`latency_row` (``None`` when it was not timed)."""
    row = latency_row(rows, batch, model)
    return None if row is None else row["median ms"]
