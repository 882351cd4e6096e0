"""Run ``medprune compress`` end to end, with a tiny budget, on every architecture of the support matrix; write the
table.

``scripts/support_matrix.py`` checks each stage of the method separately on random images (import, units, every
scorer, compress's up-front check, removal equal to masking, ONNX). This script runs the whole ``compress`` command on
real data for the same architectures, as a user would: each is built with random weights made non-degenerate
(:func:`support_matrix.non_degenerate`), saved with ``torch.save(model.state_dict())``, imported with
:func:`medprune.models.importing.import_model` for BreastMNIST (upsampled to the matrix's input size), then compressed
at a fixed rate with LRP (magnitude where LRP is refused) and the smallest budget that exercises every stage: scores
from 2 images per class, BatchNorm recalibration on 16 training images instead of fine-tuning, the point rule with a
tolerance of 0.99 and the class guard only against a class no longer predicted at all (random weights: the accuracy
figures mean nothing, the mechanics are what is checked), 1 latency repeat. A refusal is the one line compress
prints (exit code 2 on the command line); a traceback would be a bug and is reported as FAILED.

    OMP_NUM_THREADS=1 MEDPRUNE_DATA=/path/to/data .venv/bin/python scripts/support_compress.py   # writes the doc
    .venv/bin/python scripts/support_compress.py --only torchvision:resnet18 --out -             # one, to stdout
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from medprune.checkpoint import read_meta
from medprune.models import create_model
from medprune.models.importing import import_model
from medprune.models.support import scorer_blocker
from medprune.runs.compress import compress

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("support_matrix", ROOT / "scripts" / "support_matrix.py")
assert _spec is not None and _spec.loader is not None
support_matrix = importlib.util.module_from_spec(_spec)
sys.modules["support_matrix"] = support_matrix
_spec.loader.exec_module(support_matrix)

DATASET = "breastmnist"
CLASS_NAMES = ("malignant", "normal, benign")
RATE = 0.3
#: The tiny budget: every stage runs, none for long.
BUDGET: dict[str, object] = {
    "rate": RATE,
    "n_per_class": 2,
    "decision_rule": "point",
    "tolerance": 0.99,
    "max_class_recall_drop": 1.0,
    "search_recovery": "recalibrate",
    "finetune_epochs": 0,
    "recalibration_samples": 16,
    "max_train_samples": 16,
    "batch_size": 16,
    "latency_repeats": 1,
    "threads": 1,
}


@dataclass
class Row:
    """One architecture's outcome: ``shipped`` (with sizes), ``refused: <line>`` or ``FAILED: <error>``."""

    arch: str
    size: int
    method: str = "-"
    outcome: str = "-"
    units: str = "-"
    params: str = "-"
    macs: str = "-"
    seconds: float = 0.0


def run_one(arch: str, size: int, folder: Path, data_root: str) -> Row:
    """Build, import and compress one architecture; never raises."""
    row = Row(arch, size)
    started = time.perf_counter()
    try:
        _compress(row, arch, size, folder, data_root)
    except ValueError as error:  # the user errors compress refuses with (exit code 2 on the command line)
        row.outcome = f"refused: {support_matrix.short(error)}"
    except Exception as error:  # noqa: BLE001 - the table reports every failure
        logging.debug("%s:\n%s", arch, traceback.format_exc())
        row.outcome = f"FAILED: {type(error).__name__}: {support_matrix.short(error)}"
    row.seconds = time.perf_counter() - started
    return row


def _compress(row: Row, arch: str, size: int, folder: Path, data_root: str) -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    source = create_model(arch, num_classes=len(CLASS_NAMES), image_size=size)
    support_matrix.non_degenerate(source, size, generator)
    name = arch.replace(":", "_")
    weights = folder / f"{name}.pt"
    torch.save(source.state_dict(), weights)
    imported = import_model(
        arch,
        weights,
        len(CLASS_NAMES),
        image_size=size,
        class_names=list(CLASS_NAMES),
        out_dir=folder / name / "import",
        dataset=DATASET,
        data_root=data_root,
    )
    row.method = "lrp" if scorer_blocker(source, "lrp") is None else "magnitude"
    result = compress(
        str(imported.weights), out=str(folder / name / "compress"), data_root=data_root, method=row.method, **BUDGET
    )
    totals = result.record.totals
    row.outcome = "shipped"
    row.units = f"{totals['units removed (fraction)']:.0%}"
    row.params = f"{totals['params before'] / 1e6:.2f}M -> {totals['params after'] / 1e6:.2f}M"
    row.macs = f"{totals['MACs removed (fraction)']:.0%}"
    removal = read_meta(result.files["weights"])["compression"].get("removal") or {}
    if removal.get("fixed groups"):
        row.units += f" ({removal['removable share']:.0%} removable)"


def markdown(rows: list[Row], total: float) -> str:
    """The generated document."""
    lines = [
        "# Compress on every architecture of the support matrix",
        "",
        "Generated by `scripts/support_compress.py` (do not edit by hand). Each architecture of",
        "[support.md](support.md), with random weights made non-degenerate, is imported for BreastMNIST (upsampled to",
        f"the input size shown) and run through the whole `medprune compress` command at rate {RATE} with a tiny",
        "budget: scores from 2 images per class (LRP; magnitude where LRP is refused), BatchNorm recalibration on 16",
        "training images instead of fine-tuning, the point rule with a tolerance of 0.99 and the class guard only",
        "against a class no longer predicted at all (the weights are random: accuracy means nothing here, the",
        "mechanics do), 1 latency repeat, 1 thread. *shipped* means the command wrote the smaller model, its ONNX",
        "export and its card; *refused* is the one line it stops with: before reading any data when the",
        "architecture is not supported, or after the search when the decision rule refuses (on random weights the",
        "class guard often does: the pruned model stops predicting a class; every stage before the decision ran);",
        "*FAILED* would be a bug. Units removed are a fraction of all units; where part of the model is kept whole",
        "(see support.md) the share of removable units follows in brackets. Compress's MACs floor can take more units",
        "than the rate so that at least that fraction of the MACs goes.",
        "",
        "| arch | input | method | outcome | units removed | parameters | MACs removed | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.arch}` | {r.size} px | {r.method} | {r.outcome} | {r.units} | {r.params} | {r.macs} | "
            f"{r.seconds:.1f} |"
        )
    shipped = sum(r.outcome == "shipped" for r in rows)
    failed = sum(r.outcome.startswith("FAILED") for r in rows)
    lines += [
        "",
        f"Compressed end to end: {shipped} of {len(rows)} architectures; failed: {failed}.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; "
        f"total {total:.0f} s (a shared machine: seconds are indicative).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architectures to run (default: every one of the matrix)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "support-compress.md"), help="file, or - for stdout")
    parser.add_argument("--data-root", default=os.environ.get("MEDPRUNE_DATA"), help="default: $MEDPRUNE_DATA")
    options = parser.parse_args(argv)
    if not options.data_root:
        parser.error("--data-root (or MEDPRUNE_DATA) must name the folder holding breastmnist")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    chosen = [(a, s) for a, s in support_matrix.ARCHITECTURES if not options.only or a in options.only]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size in chosen:
            row = run_one(arch, size, Path(tmp), options.data_root)
            print(json.dumps(row.__dict__), file=sys.stderr)
            rows.append(row)
    text = markdown(rows, time.perf_counter() - started)
    if options.out == "-":
        sys.stdout.write(text)
    else:
        Path(options.out).write_text(text)
    return 1 if any(r.outcome.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
