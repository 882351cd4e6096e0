"""Choose the product default protocol from the setting searches, on validation only, by a rule fixed in advance.

Rule (written down before the BreastMNIST search finished; docs/method.md, "Named protocols"):

1. per dataset, per criterion and per setting (scope, normalize, sign, recalibrate), the validation lossless rate of
   balanced accuracy at 1 and 5 points, averaged over the runs (training seeds x selection seeds), as the report
   computes it (``lossless_rates`` reads validation rows only);
2. a setting is *admissible* when no control degenerates under it: every control (random, magnitude, Taylor) keeps a
   validation lossless rate above 0 at 5 points on every dataset (a control that collapses at the first rate makes
   "beats the control" meaningless, which is why the controls run through the same setting);
3. among admissible settings, the default is the one with the largest mean over datasets x attribution methods (LRP,
   DLB, IG) x tolerances (1 and 5 points) of the mean lossless rate; ties go to the earlier setting in the order
   below (fewer moving parts first).

    python scripts/choose_default.py runs/results/pneumoniamnist/search runs/results/breastmnist/search \
        --csv docs/results/setting-choice.csv > setting-choice.md
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
from pathlib import Path

import numpy as np

from medprune.report.markdown import markdown_table
from medprune.report.tables import lossless_rates, lossless_summary
from medprune.study.results import read_rows
from medprune.sweep.protocols import SETTING_FIELDS, protocol_name

METHODS = ("lrp", "dlb", "ig")
CONTROLS = ("random", "magnitude", "taylor")
TOLERANCES = (0.01, 0.05)
#: Tie-break order: global before layer, none before mean before rank, signed before abs, bn before none.
ORDER = list(itertools.product(("global", "layer"), ("none", "mean", "rank"), ("signed", "abs"), ("bn", "none")))


def run_means(folder: Path) -> tuple[str, dict[tuple[str, tuple[str, ...]], dict[float, float]]]:
    """Dataset name and, per (criterion, setting), the mean over runs of the validation lossless rate per tolerance:
    the report's own ``lossless_summary`` (the numbers of the published ``lossless_summary.csv``)."""
    rows = read_rows(folder / "rows.jsonl")
    lines = lossless_summary(lossless_rates(rows, TOLERANCES, contiguous=True, metric="balanced_accuracy"), TOLERANCES)
    means = {
        (str(line["method"]), tuple(str(line[f]) for f in SETTING_FIELDS)): {
            t: float(line[f"achieved@{t:g}"]) for t in TOLERANCES
        }
        for line in lines
    }
    return str(rows[0]["dataset"]), means


def choose(per_dataset: dict[str, dict]) -> tuple[tuple[str, ...], list[dict]]:
    """The chosen setting and one table row per setting (score, admissible, per-dataset numbers)."""
    table = []
    for setting in ORDER:
        row: dict = {"setting": "/".join(setting), "protocol": protocol_name(dict(zip(SETTING_FIELDS, setting)))}
        methods, admissible = [], True
        for dataset, means in per_dataset.items():
            for method in METHODS:
                for t in TOLERANCES:
                    value = means.get((method, setting), {}).get(t, float("nan"))
                    row[f"{dataset} {method}@{t:g}"] = round(value, 4)
                    methods.append(value)
            for control in CONTROLS:
                value = means.get((control, setting), {}).get(0.05, float("nan"))
                row[f"{dataset} {control}@0.05"] = round(value, 4)
                admissible &= bool(value > 0)
        row["score"] = round(float(np.mean(methods)), 4)
        row["admissible"] = admissible
        table.append(row)
    candidates = [r for r in table if r["admissible"] and np.isfinite(r["score"])]
    best = max(candidates, key=lambda r: r["score"])  # max keeps the first of equal scores: the ORDER tie-break
    return tuple(best["setting"].split("/")), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="setting-search sweep folders (rows.jsonl)")
    parser.add_argument("--csv", type=Path, help="write the per-setting table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_dataset = dict(run_means(folder) for folder in args.folders)
    chosen, table = choose(per_dataset)
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    ranked = sorted(table, key=lambda r: (not r["admissible"], -r["score"]))
    shown = [
        {k: v for k, v in r.items() if k in ("setting", "protocol", "score", "admissible") or k.endswith("@0.05")}
        for r in ranked
    ]
    print(f"Chosen default (validation, rule in scripts/choose_default.py): **{'/'.join(chosen)}**\n")
    print(markdown_table(shown, list(shown[0])))


if __name__ == "__main__":
    main()
