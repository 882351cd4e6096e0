"""``run_quantize(config)``: int8 for a model that is already compressed (or any medprune checkpoint), with the
evidence ``medprune compress --quantize int8`` puts on its card.

Stages (one log line each):

1. **export** the target's fp32 model to ``<out>/model.onnx``;
2. **quantize** it with ONNX Runtime static quantization (QDQ, per-channel int8 weights) calibrated on
   ``calibration_samples`` clean training images (a stratified subset drawn with ``seed``), and **judge** it on
   validation with the compress run's acceptance rule (read from the folder's ``card.json``; for a plain checkpoint,
   compress's defaults) against the original, unpruned model: it ships as ``model.int8.onnx`` only if it passes;
3. **test**: equivalence across runtimes (PyTorch fp32, ONNX Runtime fp32 and int8) on validation and test, the
   promise on test, ECE and the reliability diagram of original, compressed fp32 and int8;
4. **latency** under ONNX Runtime: original fp32, compressed fp32 and int8 at batch 1 and 32, interleaved;
5. ``quantization.json`` and ``quantization.md``.

>>> # run_quantize(QuantizeConfig(target="runs/compress"))  # a folder written by medprune compress
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from medprune.checkpoint import load_checkpoint, read_meta
from medprune.checkpoint.with_data import load_with_splits
from medprune.compression.card_page import calibration_lines, quantization_lines
from medprune.compression.config import CompressConfig
from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import predictions_and_metrics, promise_on_test
from medprune.config import ConfigError, config_to_dict, option
from medprune.data import DatasetSplits, stack_samples
from medprune.deploy.calibration import ECE_BINS, calibration_summary, softmax_with_temperature
from medprune.deploy.quantize import (
    CALIBRATION_SAMPLES,
    int8_speed_warning,
    ort_latency,
    quantize_and_judge,
    runtime_evidence,
)
from medprune.deploy.runtimes import onnx_logits, torch_logits
from medprune.provenance import file_sha256, to_jsonable
from medprune.pruning import export_onnx
from medprune.recovery.recalibration import recalibration_subset
from medprune.rundir import OutputFolder, RunDir, output_folder, write_text_atomic
from medprune.runtime import fixed_threads

logger = logging.getLogger(__name__)

__all__ = ["QuantizeConfig", "QuantizeResult", "check_inputs", "run_quantize"]

#: The acceptance rule's options, read from a compress folder's recorded config.
RULE_KEYS = ("metric", "tolerance", "decision_rule", "confidence", "max_class_recall_drop")


@dataclass
class QuantizeConfig(OutputFolder):
    """Options of ``medprune quantize``."""

    target: str = option(
        "",
        help="a folder written by medprune compress (its model.safetensors and card.json), or a medprune checkpoint "
        "(model.safetensors) to quantize as it is",
    )
    out: str = output_folder("runs/quantize")
    original: str = option(
        "",
        help="the unpruned checkpoint the int8 model is judged against",
        shown_default="the compress folder's source checkpoint (its card); a checkpoint target is its own original",
    )
    calibration_samples: int = option(
        CALIBRATION_SAMPLES,
        help="clean training images (a stratified subset drawn with seed) the int8 activation ranges are fitted on",
    )
    seed: int = option(0, help="draws the calibration images")
    ece_bins: int = option(ECE_BINS, help="equal-width confidence bins of the expected calibration error")
    threads: int = option(1, help="CPU threads of PyTorch evaluation")
    latency_threads: int = option(
        1, help="ONNX Runtime intra-op threads of the latency measurement (1: repeatable; see compress's)"
    )
    latency_repeats: int = option(20, help="timed passes of each model per batch size (interleaved)")
    data_root: str | None = option(None, help="where the data is", shown_default="as recorded in the checkpoint")
    dataset: str | None = option(None, help="which dataset", shown_default="as recorded in the checkpoint")

    def __post_init__(self) -> None:
        for name in ("calibration_samples", "ece_bins", "threads", "latency_threads", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed; valid values: >= 1")


@dataclass
class QuantizeResult:
    """What ``run_quantize`` produced: whether the int8 model ships, its record and the files written."""

    shipped: bool
    record: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    """What a quantize target resolves to: the model to quantize, the original it is judged against, the rule."""

    checkpoint: Path
    original: Path
    rule: AcceptanceRule
    relation: str


def check_inputs(config: QuantizeConfig) -> Inputs:
    """Resolve ``config.target`` (a compress folder or a checkpoint) before any work; refuse, naming the file, what
    is missing."""
    if not config.target:
        raise ConfigError("target is required: a folder written by medprune compress, or a model.safetensors")
    target = Path(config.target)
    defaults = CompressConfig(checkpoint="-")
    recorded: dict[str, Any] = {}
    if target.is_dir():
        checkpoint, card_path = target / "model.safetensors", target / "card.json"
        if not card_path.is_file():
            raise FileNotFoundError(f"{card_path}: no card.json (is {target} a folder written by medprune compress?)")
        card = json.loads(card_path.read_text())
        recorded = card.get("config") or {}
        original = Path(config.original or card.get("source", {}).get("checkpoint", ""))
        relation = "pruned+quantized"
    else:
        checkpoint = target
        original = Path(config.original) if config.original else target
        relation = "pruned+quantized" if "pruned" in read_meta(checkpoint) else "quantized"
    for label, path in (("target checkpoint", checkpoint), ("original checkpoint", original)):
        if not path.is_file() and not path.with_suffix(".safetensors").is_file():
            raise FileNotFoundError(f"{label} {path} not found (pass --original for the unpruned model)")
    values = {key: recorded.get(key, getattr(defaults, key)) for key in RULE_KEYS}
    rule = AcceptanceRule(
        metric=values["metric"],
        tolerance=float(values["tolerance"]),
        rule=values["decision_rule"],
        confidence=float(values["confidence"]),
        max_class_recall_drop=float(values["max_class_recall_drop"]),
    )
    return Inputs(checkpoint, original, rule, relation)


@dataclass
class Prepared:
    """What quantizing starts from: both models, the splits, the validation tensors, the fp32 ONNX export, the original
    model's validation predictions and metrics (the rule's baseline) and the calibration images."""

    compressed: nn.Module
    original: nn.Module
    splits: DatasetSplits
    names: list[str]
    val: tuple[Tensor, Tensor]
    fp32: Path
    predicted: np.ndarray
    baseline: dict[str, Any]
    calibration_images: Tensor


def prepare(inputs: Inputs, config: QuantizeConfig, out: Path) -> Prepared:
    """Load the target (with its data) and the original, export the target to ``out/model.onnx``, take the original's
    validation baseline and the clean training images int8 is calibrated on (``medprune quantize`` and
    bench/quantize.py start here)."""
    compressed, _, splits = load_with_splits(
        str(inputs.checkpoint),
        augment=False,
        dataset=config.dataset,
        data_root=config.data_root,
        label=f"checkpoint {inputs.checkpoint}",
        override_is_same_data=True,
    )
    compressed = compressed.cpu().eval()
    original = load_checkpoint(inputs.original)[0].cpu().eval()
    names = list(splits.class_names)
    val = stack_samples(splits.val, range(len(splits.val)))
    fp32 = export_onnx(compressed, out / "model.onnx", val[0][:1])
    logger.info("exported %s to %s", inputs.checkpoint, fp32)
    predicted, baseline = predictions_and_metrics(original, val, names)
    subset = recalibration_subset(splits.train, config.calibration_samples, config.seed)
    images = stack_samples(subset, range(len(subset)))[0]
    return Prepared(compressed, original, splits, names, val, fp32, predicted, baseline, images)


def run_quantize(config: QuantizeConfig) -> QuantizeResult:
    """Export, quantize, judge on validation, test, time and write the record (see the module docstring)."""
    inputs = check_inputs(config)
    out = Path(config.out)
    cosmetic = ("latency_threads", "latency_repeats", "overwrite", "out", "ece_bins")
    with RunDir(out, "quantize", config, cosmetic=cosmetic, overwrite=config.overwrite), fixed_threads(config.threads):
        ready = prepare(inputs, config, out)
        compressed, original, splits, names, val = (
            ready.compressed,
            ready.original,
            ready.splits,
            ready.names,
            ready.val,
        )
        fp32, predicted, baseline = ready.fp32, ready.predicted, ready.baseline
        record = quantize_and_judge(
            fp32,
            out,
            ready.calibration_images,
            calibration_source=f"clean training images, a stratified subset drawn with seed {config.seed}",
            rule=inputs.rule,
            val=val,
            original_predictions=predicted,
            baseline=baseline,
            names=names,
        )
        logger.info("int8 %s on validation", "shipped" if record["shipped"] else f"refused: {record['why not']}")
        int8 = out / record["file"]
        test = stack_samples(splits.test, range(len(splits.test)))  # read after the decision
        record["equivalence"] = runtime_evidence(compressed, fp32, int8, {"validation": val, "test": test}, names)
        labels = test[1].numpy()
        int8_logits = onnx_logits(int8, test[0])
        test_predicted, _ = predictions_and_metrics(original, test, names)
        record["promise"] = promise_on_test(
            labels,
            test_predicted,
            int8_logits.argmax(1),
            names,
            metric=inputs.rule.metric,
            tolerance=inputs.rule.tolerance,
            confidence=inputs.rule.confidence,
        )
        probabilities = {
            "original fp32": softmax_with_temperature(torch_logits(original, test[0])),
            "compressed fp32": softmax_with_temperature(torch_logits(compressed, test[0])),
            "compressed int8": softmax_with_temperature(int8_logits),
        }
        calibration = calibration_summary(
            probabilities, labels, bins=config.ece_bins, diagram=out / "reliability.png", title="Test split"
        )
        calibration.update(split="test", temperature=None)
        logger.info("tested: ECE %s", {k: round(v, 4) for k, v in calibration["ece"].items()})
        record["latency"] = ort_latency(
            original, fp32, int8, val[0][:1], threads=config.latency_threads, repeats=config.latency_repeats
        )
        slow_int8 = int8_speed_warning(record)  # the card's warning, here too: a shipped int8 that bought no speed
        record["warnings"] = [slow_int8] if slow_int8 else []
        if slow_int8:
            logger.warning("%s", slow_int8)
        document = {
            "base_model": {"name": inputs.original.name, "sha256": read_meta(inputs.original).get("weights_sha256")},
            "target": {"checkpoint": str(inputs.checkpoint), "sha256": file_sha256(inputs.checkpoint)},
            "relation": inputs.relation if record["shipped"] else "not shipped",
            "quantization": record,
            "calibration": calibration,
            "config": config_to_dict(config),
        }
        write_text_atomic(out / "quantization.json", json.dumps(to_jsonable(document), indent=2) + "\n")
        lines = [f"# int8: {inputs.checkpoint}", "", f"Derived from `{inputs.original}` ({document['relation']}).", ""]
        lines += [f"**Warning:** {warning}" for warning in record["warnings"]] + ([""] if record["warnings"] else [])
        write_text_atomic(
            out / "quantization.md", "\n".join(lines + quantization_lines(record) + calibration_lines(calibration))
        )
        logger.info("int8 latency and equivalence written to %s", out / "quantization.md")
    files = {
        "onnx": str(fp32),
        "int8": str(int8),
        "json": str(out / "quantization.json"),
        "md": str(out / "quantization.md"),
    }
    return QuantizeResult(bool(record["shipped"]), document, files)
