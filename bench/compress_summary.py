"""Test-split evidence for compress runs (issue 10): per run and pooled per dataset, the compressed model's balanced
accuracy minus the unpruned model's, with a paired 95% bootstrap CI (images resampled, and runs when pooled).

Reads only finished compress folders (their choices are made already); the test split is read for reporting.

    .venv/bin/python bench/compress_summary.py runs/bench/*/run --data-root "$MEDPRUNE_DATA" > summary.md
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from medprune.checkpoint import load_checkpoint
from medprune.checkpoint.with_data import splits_for_checkpoint
from medprune.data import stack_samples
from medprune.metrics import predict
from medprune.stats import correctness, paired_metric_difference


def test_correctness(folder: Path, data_root: str | None) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Dataset, checkpoint, correctness of the original and the compressed model on test, labels, card."""
    card = json.loads((folder / "card.json").read_text())
    checkpoint = card["config"]["checkpoint"]
    original, meta = load_checkpoint(checkpoint)
    small, _ = load_checkpoint(folder / "model.safetensors")
    splits = splits_for_checkpoint(meta, data_root=data_root)
    test = stack_samples(splits.test, range(len(splits.test)))
    out = []
    for model in (original, small):
        probs, truth = predict(model.eval(), test)
        out.append(correctness(probs.argmax(1), truth))
    return splits.name, checkpoint, out[0], out[1], np.asarray(truth), card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="compress output folders (card.json, model.safetensors)")
    parser.add_argument("--data-root")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    pooled: dict[str, list] = defaultdict(list)
    print("| dataset | checkpoint | rate (val) | units / params / MACs removed | test BA unpruned -> compressed |")
    print("|---|---|---|---|---|")
    rows = []
    for folder in args.folders:
        dataset, checkpoint, before, after, labels, card = test_correctness(folder, args.data_root)
        diff = paired_metric_difference(after[None], before[None], labels, metric="balanced_accuracy")
        totals = card["totals"]
        removed = (
            f"{totals['units removed (fraction)']:.3f} / {totals['params removed (fraction)']:.3f} / "
            f"{totals['MACs removed (fraction)']:.3f}"
        )
        ba = f"{card['test_original']['balanced_accuracy']:.4f} -> {card['test_compressed']['balanced_accuracy']:.4f}"
        ci = diff.difference
        rows.append((dataset, checkpoint, card["choice"]["chosen rate"], removed, ba, ci))
        pooled[dataset].append((before, after, labels))
        print(
            f"| {dataset} | {Path(checkpoint).parent.name} | {card['choice']['chosen rate']:.2f} | {removed} | {ba} "
            f"({ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]) |"
        )
    print("\nPooled per dataset (runs x test images resampled together; compressed - unpruned):\n")
    for dataset, members in pooled.items():
        before = np.stack([m[0] for m in members])
        after = np.stack([m[1] for m in members])
        diff = paired_metric_difference(after, before, members[0][2], metric="balanced_accuracy")
        ci = diff.difference
        runs = len(members)
        print(f"- {dataset}: {ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] over {runs} runs ({diff.verdict})")


if __name__ == "__main__":
    main()
