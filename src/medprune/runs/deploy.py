"""Deploy a sweep's choice: the run of the best line, physically pruned at its validation lossless rate, saved and
checked (masked = physical = reloaded accuracy on the test split, which is reported, never used to choose).

For a ``recalibrate: bn`` setting the BatchNorm statistics are re-estimated on the sweep's training images before
the model is saved, so the deployed model is the swept one. ``medprune demo`` uses it as its stage 4.

>>> # deployment = deploy_choice(best, Path("runs/sweep"), Path("runs/pruned"), tolerance=0.01,
>>> #     criterion="accuracy", couplings=True, data_root="data")
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from medprune.data import stack_samples
from medprune.provenance import to_jsonable
from medprune.pruning import apply_masks
from medprune.recovery.recalibration import recalibrated_batchnorm
from medprune.rundir import write_text_atomic
from medprune.runs.prune import save_pruned
from medprune.sweep.artifacts import load_swept_models
from medprune.sweep.protocols import SETTING_FIELDS
from medprune.sweep.table import Row

logger = logging.getLogger(__name__)

__all__ = ["Deployment", "deploy_choice"]


@dataclass
class Deployment:
    """The physically pruned model the demo deployed (also ``pruned/done.json``).

    Attributes:
        choice: the deployed run (method, sampling, setting, selection seed, checkpoint key), its rate and achieved
            rate, the criterion, tolerance and metric, all chosen on validation, and ``val`` / ``test``: the metric
            there on each split (test reported, never used to choose).
        checkpoint: the pruned checkpoint. masked_accuracy, physical_accuracy, reloaded_accuracy: its test accuracy
            masked (with recalibrated BatchNorm statistics for a ``bn`` setting), physically pruned and read back.
        params, macs: ``[before, after]`` physical removal.
    """

    choice: dict[str, Any]
    checkpoint: str
    masked_accuracy: float
    physical_accuracy: float
    reloaded_accuracy: float
    params: list[int]
    macs: list[int]


def deploy_choice(
    best: Row,
    sweep_dir: Path,
    out: Path,
    *,
    tolerance: float,
    criterion: Literal["accuracy", "worst_recall"],
    couplings: bool,
    data_root: str | None,
) -> Deployment:
    """Physically prune the chosen run at its validation lossless rate (reused when the choice is the same).

    Args:
        best: the chosen line's row of :func:`medprune.report.tables.best_line` (lossless rates per tolerance).
        sweep_dir: the sweep's folder. out: where the pruned model goes (``done.json`` records the choice).
        tolerance, criterion: which lossless rate (``accuracy``: on the sweep's metric; ``worst_recall``: on the
            worst per-class recall drop). couplings: as in the sweep. data_root: where the data is.

    For a ``recalibrate: bn`` setting the BatchNorm statistics are re-estimated on the same training images as in the
    sweep before the model is saved, so the deployed model is the swept one.
    """
    label = f"{tolerance:g}"
    column = "lossless" if criterion == "accuracy" else "clinical"
    rate = float(best[f"{column}@{label}"])
    choice = {
        **{f: best[f] for f in ("method", "sampling", "checkpoint", "seed", *SETTING_FIELDS)},
        "rate": rate,
        "achieved_rate": best[f"achieved@{label}"] if column == "lossless" else None,
        "criterion": criterion,
        "metric": best["metric"],
        "tolerance": tolerance,
        "chosen_on": "val",
        "val": best[f"val@{label}"] if column == "lossless" else None,
        "test": best[f"test@{label}"] if column == "lossless" else None,
    }
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("choice") == to_jsonable(choice):
        logger.info("deploy: reusing %s", out)
        return Deployment(**json.loads(done.read_text()))
    item = load_swept_models(sweep_dir, data_root)[best["checkpoint"]]
    masks = item.masks(best, rate, physical=True)
    test = stack_samples(item.splits.test, range(len(item.splits.test)))
    meta = {**item.meta, "pruning": {**choice, "couplings": couplings}}
    with contextlib.ExitStack() as stack:
        if best["recalibrate"] == "bn" and rate > 0:
            stack.enter_context(apply_masks(item.model, masks))
            stack.enter_context(recalibrated_batchnorm(item.model, item.recalibration(int(best["seed"]))))
        result = save_pruned(item.model, masks, out, test, list(item.splits.class_names), meta, "physical")
    if result.physical is None or result.reloaded_accuracy is None or not result.cost_before or not result.cost_after:
        raise RuntimeError(f"no physically pruned model was written to {out}")
    deployment = Deployment(
        choice=choice,
        checkpoint=str(result.checkpoint),
        masked_accuracy=result.masked["accuracy"],
        physical_accuracy=result.physical["accuracy"],
        reloaded_accuracy=result.reloaded_accuracy,
        params=[result.cost_before["params"], result.cost_after["params"]],
        macs=[result.cost_before["macs"], result.cost_after["macs"]],
    )
    write_text_atomic(done, json.dumps(to_jsonable(asdict(deployment)), indent=2, allow_nan=False) + "\n")
    return deployment
