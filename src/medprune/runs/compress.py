"""``run_compress(config)``: a trained checkpoint -> the smallest model within tolerance on validation, recovered,
physically smaller, exported to ONNX and documented by a model card.

Stages (one log line each), reading top to bottom:

1. **score** the units with ``method``/``sampling`` (score files reused from ``<out>/scores``);
2. **search** the candidate ``rates`` in increasing order on the **validation** split (a warning first when one
   validation error moves ``metric`` by more than ``tolerance``): each candidate is masked (with ``macs_floor``, at
   a unit rate raised until the masks remove at least the rate's fraction of the MACs),
   recovered as ``search_recovery`` says (BatchNorm recalibration on clean training images, or that plus
   fine-tuning) and kept when ``baseline - value <= tolerance`` on ``metric``; every candidate is tried (or the
   search stops after ``patience`` consecutive failures) and the largest rate kept is chosen. Rows go to
   ``search.jsonl`` as they finish;
3. **recover** at the chosen rate: recalibration, then fine-tuning with the pruned units held at exactly zero, by
   default distilled from the unpruned model without label targets (the same recovery each search candidate got,
   so the search already judged this model), or ``rounds`` > 1 rounds of iterative pruning;
4. **remove** the units physically and check the smaller model's outputs against the masked model's; with
   ``fold_batchnorm``, fold each BatchNorm into its convolution (:func:`medprune.pruning.fold_batchnorms`) and check
   the folded model against the masked one too: from here on every figure is the folded model's, the one that
   ships, except the sizes, which stay removal's (the folding is stated on its own line);
5. **export** ``model.onnx`` and check it against onnxruntime;
6. **test**: the test split is read here for the first time, for the original and the compressed model;
7. **explanations**: LRP heatmaps of the original and the compressed model on a seeded sample of test images (up
   to 8 per class), their per-image correlation per class (skipped, and said so, where LRP cannot explain the model);
8. **card**: ``card.json`` + ``card.md`` + ``card.html`` with every number measured above, CPU latency at batch 1 and
   32.

A killed run restarts where it stopped: score files, search rows and fine-tune checkpoints are reused (the output
folder's ``run.json`` guarantees they were made by the same config).

>>> # result = compress("runs/pneumoniamnist/model.safetensors", finetune_epochs=2)  # the Python API, flat keys
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from medprune.checkpoint import load_checkpoint, read_meta
from medprune.checkpoint.with_data import load_with_splits
from medprune.compression.card import CompressionRecord
from medprune.compression.card_page import write_card
from medprune.compression.config import SEARCH_FILE, CompressConfig, CompressResult
from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import (
    FOLD_TOLERANCE,
    ONNX_TOLERANCE,
    StageTimer,
    card_warnings,
    choice_record,
    flip_gallery,
    folding_record,
    latency_rows,
    layer_changes,
    max_output_difference,
    metric_value,
    onnx_difference,
    predictions_and_metrics,
    promise_on_test,
    reproduce_command,
    size_totals,
    split_metrics,
    validation_resolution,
)
from medprune.compression.search import (
    Workbench,
    choose,
    evaluate_split,
    final_model,
    non_monotone,
    save_compressed,
    search,
)
from medprune.config import build_config, config_to_dict
from medprune.data import stack_samples
from medprune.data.splitting import limit_dataset
from medprune.deploy.bundle import preprocessing, write_monai_bundle
from medprune.deploy.calibration import calibration_summary, fit_temperature, softmax_with_temperature
from medprune.deploy.explanations import explanation_drift
from medprune.deploy.quantize import (
    CALIBRATION_SAMPLES,
    INT8_FILE,
    int8_speed_warning,
    ort_latency,
    quantize_and_judge,
    runtime_evidence,
)
from medprune.deploy.runtimes import onnx_logits, torch_logits
from medprune.options import NO_SAMPLING
from medprune.progress import visible_logs
from medprune.provenance import file_sha256, model_checksum
from medprune.pruning import export_onnx, fold_batchnorms, model_cost, remove_units
from medprune.pruning.cost import MacsMeter
from medprune.pruning.masks import achieved_rate
from medprune.pruning.physical import check_compressible, removal_plan
from medprune.recovery.recalibration import recalibration_subset
from medprune.rundir import RunDir
from medprune.runtime import fixed_threads
from medprune.scoring import scorer_entry
from medprune.scoring.store import ScoreStore

logger = logging.getLogger(__name__)

__all__ = ["CompressConfig", "CompressResult", "check_inputs", "run_compress", "compress"]


def check_inputs(config: CompressConfig) -> str:
    """The checks of ``config`` that read files (its values are checked when it is built), before any work; return
    the sampling to score with (``none`` for a data-free method)."""
    if not config.checkpoint:
        raise ValueError("checkpoint is required (a model.safetensors written by medprune train)")
    if not Path(config.checkpoint).with_suffix(".json").is_file() and not Path(config.checkpoint + ".json").is_file():
        raise FileNotFoundError(f"checkpoint {config.checkpoint}: no model.json beside it (a medprune checkpoint)")
    check_compressible(load_checkpoint(config.checkpoint)[0], config.method)  # up front: before any data is read
    return NO_SAMPLING if scorer_entry(config.method).data_free else config.sampling


def run_compress(config: CompressConfig) -> CompressResult:
    """Score, search on validation, recover, remove, export, test and write the card (see the module docstring).

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir` (a killed run
    resumes; another config's folder is refused unless ``config.overwrite``, which moves its content aside).
    """
    sampling = check_inputs(config)
    out = Path(config.out)
    cosmetic = ("device", "latency_threads", "latency_repeats", "overwrite", "out", "ece_bins")
    timer = StageTimer()
    # options added after run folders were made, as those folders ran
    added = {
        "macs_floor": False,
        "decision_rule": "point",
        "threads": None,
        "calibrate": "none",
        "quantize": "none",
        "calibration_samples": CALIBRATION_SAMPLES,
        "export": "onnx",
        "channel_multiple": 1,
        "fold_batchnorm": False,
    }
    rule = AcceptanceRule(
        metric=config.metric,
        tolerance=config.tolerance,
        rule=config.decision_rule,
        confidence=config.confidence,
        max_class_recall_drop=config.max_class_recall_drop,
    )
    with (
        RunDir(out, "compress", config, cosmetic=cosmetic, overwrite=config.overwrite, defaults=added),
        fixed_threads(config.threads),
    ):
        trained = read_meta(config.checkpoint).get("train_config") or {}
        model, meta, splits = load_with_splits(
            config.checkpoint,
            augment=bool(trained.get("augment", False)) if config.finetune.augment is None else config.finetune.augment,
            device=config.device,
            dataset=config.dataset,
            data_root=config.data_root,
            label=f"checkpoint {config.checkpoint}",
            override_is_same_data=True,
        )
        names = list(splits.class_names)
        store_args: dict[str, Any] = dict(
            n_per_class=config.scoring.n_per_class,
            seed=config.seed,
            sign=config.scoring.sign,
            target=config.scoring.target,
        )
        store_args["device"] = config.device
        store = ScoreStore(model, splits.train, out / "scores", checksum=model_checksum(model), **store_args)
        scores = store.scores(config.method, sampling)
        timer.lap("score")
        bench = _workbench(config, model, splits, out)
        logger.info("validation baseline: %s %s", config.metric, _fmt(metric_value(bench.baseline, config.metric)))
        resolution, coarse = validation_resolution(bench.val[1], names, config.metric, config.tolerance)
        epochs = config.finetune.epochs_for(len(bench.train))
        logger.info("recovery: %d fine-tuning epoch(s) on %d training images", epochs, len(bench.train))
        search_epochs = epochs if config.search_recovery == "finetune" else 0
        rows = search(
            bench,
            scores,
            [config.rate] if config.rate is not None else config.rates,
            rule=rule,
            patience=config.patience or len(config.rates) + 1,
            epochs=search_epochs,
            path=out / SEARCH_FILE,
        )
        chosen = choose(rows, rule, metric_value(bench.baseline, config.metric), resolution)
        skipped = non_monotone(rows)
        if skipped:
            logger.warning("non-monotone search: rate(s) %s passed above a refused rate; not chosen", skipped)
        timer.lap("search")

        def rescore(current: nn.Module, index: int) -> dict[str, Tensor]:
            path = out / "scores" / f"round-{index}"
            return ScoreStore(current, splits.train, path, **store_args).scores(config.method, sampling)

        final, masks = final_model(
            bench,
            scores,
            chosen.unit_rate,
            epochs=epochs,
            rounds=config.rounds,
            tag=f"search-{chosen.rate:.4f}" if search_epochs == epochs else f"final-{chosen.rate:.4f}",
            rescore=rescore,
        )
        final = final.cpu().eval()
        final_val = evaluate_split(final, bench.val, names)
        timer.lap("recover")
        original = model.cpu().eval()
        small = remove_units(final, masks)  # its sizes are removal's; what ships is `shipped`
        probe = bench.val[0][:64]
        checks: dict[str, float | bool | None] = {
            "physical vs masked max |difference|": max_output_difference(small, final, probe)
        }
        folding: dict[str, Any] = {}
        shipped = small
        if config.fold_batchnorm:
            shipped = fold_batchnorms(small)
            folding = folding_record(small, shipped)
            folded_diff = max_output_difference(shipped, final, probe)
            checks["folded vs masked max |difference|"] = folded_diff
            checks[f"folded within {FOLD_TOLERANCE:g} of masked"] = folded_diff <= FOLD_TOLERANCE
            if folded_diff > FOLD_TOLERANCE:
                logger.warning("folded model differs from the masked one by %.2e (> %g)", folded_diff, FOLD_TOLERANCE)
        compression: dict[str, Any] = {"method": config.method, "sampling": sampling, "rate": chosen.rate}
        if config.fold_batchnorm:  # the folded BatchNorm paths: the sidecar's folded_batchnorms (save_checkpoint)
            compression["folded_batchnorms"] = True
        fixed = sorted(bench.removal.fixed) if bench.removal else []
        achieved = {
            "unit_rate": chosen.unit_rate,
            "achieved_rate": achieved_rate(masks, exclude=fixed),  # of the removable units, as the rate
            "achieved_rate_all_units": achieved_rate(masks),
            "removal": bench.removal.summary() if bench.removal else None,
        }
        files = save_compressed(shipped, meta, {**compression, **achieved}, out)
        timer.lap("remove")
        export_onnx(shipped, out / "model.onnx", probe[:1])
        onnx_diff, onnx_limit = onnx_difference(out / "model.onnx", shipped, probe)
        checks.update(
            {
                "ONNX vs PyTorch max |diff|": onnx_diff,
                f"ONNX tolerance ({ONNX_TOLERANCE:g} x largest |logit|, at least {ONNX_TOLERANCE:g})": onnx_limit,
                "ONNX within tolerance": onnx_diff <= onnx_limit,
            }
        )
        files["onnx"] = str(out / "model.onnx")
        timer.lap("export")
        quantization: dict[str, Any] = {}
        if config.quantize == "int8":  # a choice, made on validation before the test split is read
            subset = recalibration_subset(splits.train, config.calibration_samples, config.seed)
            quantization = quantize_and_judge(
                out / "model.onnx",
                out,
                stack_samples(subset, range(len(subset)))[0],
                calibration_source=f"clean training images, a stratified subset drawn with seed {config.seed}",
                rule=rule,
                val=(bench.val[0].cpu(), bench.val[1].cpu()),
                original_predictions=bench.baseline_predictions,
                baseline=bench.baseline,
                names=names,
            )
            if quantization["shipped"]:
                files["onnx_int8"] = str(out / INT8_FILE)
            timer.lap("quantize")
        test = stack_samples(splits.test, range(len(splits.test)))  # the first and only read of the test split
        test_original, predicted_original = split_metrics(original, test, names)
        test_compressed, predicted_compressed = split_metrics(shipped, test, names)
        promise = promise_on_test(
            test[1].numpy(),
            predicted_original,
            predicted_compressed,
            names,
            metric=config.metric,
            tolerance=config.tolerance,
            confidence=config.confidence,
        )
        gallery = flip_gallery(
            test[0], test[1].numpy(), predicted_original, predicted_compressed, names, out / "flips.png"
        )
        if gallery is not None:
            promise["gallery"] = gallery
        calibration = _calibration(config, original, shipped, bench.val, test, out)
        if quantization:
            int8 = out / quantization["file"]
            quantization["equivalence"] = runtime_evidence(
                shipped,
                out / "model.onnx",
                int8,
                {"validation": (bench.val[0].cpu(), bench.val[1].cpu()), "test": test},
                names,
            )
            quantization["promise"] = promise_on_test(
                test[1].numpy(),
                predicted_original,
                onnx_logits(int8, test[0]).argmax(1),
                names,
                metric=config.metric,
                tolerance=config.tolerance,
                confidence=config.confidence,
            )
        warnings = card_warnings(
            test_original,
            test_compressed,
            resolution_coarse=coarse,
            resolution=resolution,
            non_monotone_rates=skipped,
            rule=config.decision_rule,
        )
        timer.lap("test")
        explanations = explanation_drift(original, shipped, test[0], test[1], names, seed=config.seed)
        timer.lap("explanations")
        logger.info(
            "explanation drift on test (%s): %.2f s",
            explanations.get("skipped") or f"{len(explanations['per_image'])} images",
            timer.laps["explanations"],
        )
        before_cost, after_cost = model_cost(original), model_cost(small)  # removal's sizes, before any folding
        macs_ratio = before_cost["macs"] / after_cost["macs"] if after_cost["macs"] else None
        latency = latency_rows(
            original, shipped, threads=config.latency_threads, repeats=config.latency_repeats, macs_ratio=macs_ratio
        )
        if quantization:
            quantization["latency"] = ort_latency(
                original,
                out / "model.onnx",
                out / quantization["file"],
                bench.val[0][:1].cpu(),
                threads=config.latency_threads,
                repeats=config.latency_repeats,
            )
            slow_int8 = int8_speed_warning(quantization)
            if slow_int8:
                warnings.append(slow_int8)
        layers = layer_changes(original, small, masks)
        timer.lap("latency")
        record = CompressionRecord(
            title=f"{meta['model']['name']} on {splits.name}, {config.method}/{sampling}",
            source={
                "checkpoint": config.checkpoint,
                "architecture": meta["model"]["name"],
                "dataset": splits.name,
                "validation images": len(bench.val[1]),
                "test images": len(test[1]),
            },
            choice=choice_record(config, sampling, chosen, bench.baseline, final_val, epochs, resolution),
            search=rows,
            totals=size_totals(masks, before_cost, after_cost),
            layers=layers,
            test_original=test_original,
            test_compressed=test_compressed,
            latency=latency,
            checks=checks,
            commands=[reproduce_command(config, CompressConfig(checkpoint=config.checkpoint))],
            config=config_to_dict(config),
            hashes={
                "data fingerprint": getattr(splits, "fingerprint", None),
                "input weights": meta.get("weights_sha256"),
                "output weights": file_sha256(files["weights"]),
                "onnx": file_sha256(files["onnx"]),
                **({"onnx int8": quantization["sha256"]} if quantization.get("shipped") else {}),
            },
            timings=timer.laps,
            warnings=warnings,
            promise=promise,
            calibration=calibration,
            base_model={"name": Path(config.checkpoint).name, "sha256": meta.get("weights_sha256")},
            quantization=quantization,
            relation="pruned+quantized" if quantization.get("shipped") else "pruned",
            preprocessing=preprocessing(meta, getattr(splits.test, "transform", None)),
            explanations=explanations,
            removal=achieved.get("removal") or {},
            folding=folding,
        )
        card_json, card_md = write_card(record, out)
        files.update(card_json=str(card_json), card_md=str(card_md))
        if config.export == "monai":
            onnx_files = {"model.onnx": out / "model.onnx"}
            if quantization.get("shipped"):
                onnx_files[INT8_FILE] = out / INT8_FILE
            bundle = write_monai_bundle(
                out / "bundle",
                model=shipped,
                example=probe[:1].cpu(),
                card=record.to_dict(),
                card_md=card_md,
                onnx_files=onnx_files,
            )
            files["bundle"] = str(bundle)
            logger.info("MONAI bundle written to %s", bundle)
    for warning in warnings:
        logger.warning("%s", warning)
    if onnx_diff > onnx_limit:
        logger.warning(
            "ONNX output differs from PyTorch by %.2e (> %.2e, %g x the largest |logit|)",
            onnx_diff,
            onnx_limit,
            ONNX_TOLERANCE,
        )
    logger.info(
        "compressed %s at rate %.2f: MACs removed %.3f, test %s %s -> %s; card %s",
        config.checkpoint,
        chosen.rate,
        record.totals["MACs removed (fraction)"],
        config.metric,
        _fmt(getattr(test_original, config.metric)),
        _fmt(getattr(test_compressed, config.metric)),
        card_md,
    )
    return CompressResult(chosen.rate, masks, record, shipped, files)


def _workbench(config: CompressConfig, model: nn.Module, splits: Any, out: Path) -> Workbench:
    removal = removal_plan(model)
    if removal.fixed:  # the units physical removal cannot drop exactly stay; the rate is a fraction of the others
        logger.warning(
            "physical removal keeps %d unit group(s) whole (%d of %d units): rates are fractions of the other %d "
            "units; e.g. %s",
            len(removal.fixed),
            sum(removal.units.values()) - removal.removable_units,
            sum(removal.units.values()),
            removal.removable_units,
            next(iter(removal.fixed.values())),
        )
    recalibration = None
    if config.recalibration_samples:
        recalibration = recalibration_subset(splits.train, config.recalibration_samples, config.seed)
    val = stack_samples(splits.val, range(len(splits.val)))
    names = list(splits.class_names)
    predicted, baseline = predictions_and_metrics(model, val, names)
    return Workbench(
        model=model,
        train=limit_dataset(splits.train, config.finetune.samples, config.seed),
        val=val,
        class_names=names,
        recalibration=recalibration,
        couplings=removal.couplings,
        ranking=config.ranking,
        recipe=config.finetune,
        seed=config.seed,
        device=config.device,
        out=out,
        baseline=baseline,
        baseline_predictions=predicted,
        macs=MacsMeter(model) if config.macs_floor else None,
        removal=removal,
        channel_multiple=config.channel_multiple,
    )


def _calibration(
    config: CompressConfig,
    original: nn.Module,
    small: nn.Module,
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    out: Path,
) -> dict[str, Any]:
    """ECE and the reliability diagram of both models on test; with ``calibrate=temperature``, also the compressed
    model's logits divided by the temperature fitted on validation."""
    logits = {"original": torch_logits(original, test[0]), "compressed": torch_logits(small, test[0])}
    probabilities = {label: softmax_with_temperature(z) for label, z in logits.items()}
    temperature = None
    if config.calibrate == "temperature":
        temperature = fit_temperature(torch_logits(small, val[0]), val[1].numpy())
        probabilities["compressed, temperature-scaled"] = softmax_with_temperature(logits["compressed"], temperature)
    summary = calibration_summary(
        probabilities, test[1].numpy(), bins=config.ece_bins, diagram=out / "reliability.png", title="Test split"
    )
    summary.update(split="test", temperature=temperature)
    if temperature is not None:
        summary["temperature fitted on"] = f"validation ({len(val[1])} images, negative log-likelihood)"
        logger.info("temperature %.3f fitted on validation; test ECE %s", temperature, summary["ece"])
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def compress(checkpoint: str, out: str = "runs/compress", **options: Any) -> CompressResult:
    """Python API of ``medprune compress``: ``compress("runs/train/model.safetensors", finetune_epochs=2)``.

    Args:
        checkpoint: the trained model. out: output folder.
        **options: any :class:`CompressConfig` option, by its key (``finetune_epochs=2``, ``scope="layer"``) or
            as a part (``finetune=FinetuneRecipe(...)``).
    """
    config = build_config(CompressConfig, overrides={"checkpoint": checkpoint, "out": out, **options})
    with visible_logs():  # a stage line and a line per candidate, as on the command line
        return run_compress(config)
