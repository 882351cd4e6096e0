"""Does compress keep its promise on data no choice has read? The calibration of its decision rule.

For every held-out checkpoint (training seeds no choice of compress's defaults has seen) compress runs twice, once
with the certified rule (the default: paired lower confidence bound on validation, class guard, monotone search) and
once with the point rule (``decision_rule=point``: the validation point estimate within the tolerance, today's rule
before the change). Each run's **test** split is read once, by compress itself, for the model it shipped; this script
only collects the cards. The promise is kept when the shipped model's test drop of the tolerance metric is within the
tolerance. Reported per dataset and rule: checkpoints, shipped, refused, promise kept (count, fraction with a Wilson
interval over checkpoints: the independent runs), and the MACs removed.

Datasets: PneumoniaMNIST (``configs/pneumoniamnist.yaml``), BreastMNIST (``configs/breastmnist.yaml``) and
``chestbreast``, an imbalanced four-class set built here from the real files (PneumoniaMNIST normal / pneumonia and
BreastMNIST benign / malignant, subsampled so the classes are 600 / 1,800 / 300 / 120 training images and the
validation split is small, 40 / 120 / 20 / 8; test: every official test image of the four classes).

    python bench/compress_calibration.py prepare  --out runs/calibration
    python bench/compress_calibration.py train    --out runs/calibration --seeds 4,5,6,7,8 [--device cuda] [--jobs 8]
    python bench/compress_calibration.py compress --out runs/calibration [--device cuda] [--jobs 8]
    python bench/compress_calibration.py summary  --out runs/calibration --csv docs/results/compress_calibration.csv

Every step resumes: finished trainings and compress runs (a ``card.json``, or a refusal recorded in ``refusal.txt``)
are skipped. Runs are independent processes; ``--jobs`` runs several at once (a GPU machine), one thread each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from medprune.stats import wilson_interval

REPO = Path(__file__).resolve().parents[1]
_POINT = ["--set", "decision_rule=point", "--set", "max_class_recall_drop=1.0", "--set", "patience=6"]
#: The rules compared, each at a tolerance: the default (certified), and the point estimate (uncertified) with the
#: class guard reduced to its never-waived part (no class's recall to zero) and every candidate tried; both searches
#: are monotone. Each runs at compress's default tolerance (1 point) and at 2 points (the demo's tolerance, and about
#: the smallest promise PneumoniaMNIST's validation split can certify).
RULES: dict[str, tuple[float, list[str]]] = {
    "certified": (0.01, []),
    "point": (0.01, _POINT),
    "certified_2pt": (0.02, ["--set", "tolerance=0.02"]),
    "point_2pt": (0.02, ["--set", "tolerance=0.02", *_POINT]),
}
DATASETS = {
    "pneumoniamnist": REPO / "configs" / "pneumoniamnist.yaml",
    "breastmnist": REPO / "configs" / "breastmnist.yaml",
    "chestbreast": None,  # built by `prepare`, trained with the PneumoniaMNIST recipe
}
#: chestbreast: (source file, source label, class name, train images, validation images)
CHESTBREAST = (
    ("pneumoniamnist", 0, "chest-normal", 600, 40),
    ("pneumoniamnist", 1, "chest-pneumonia", 1800, 120),
    ("breastmnist", 1, "breast-benign", 300, 20),
    ("breastmnist", 0, "breast-malignant", 120, 8),
)
METRIC = "balanced_accuracy"


def _data_root() -> Path:
    return Path(os.environ.get("MEDPRUNE_DATA") or REPO.parent / "shared" / "data")


def prepare(out: Path, seed: int = 0) -> Path:
    """Write the chestbreast fixture as ``<out>/data/chestbreast/{train,val,test}/<class>/*.png``."""
    root = out / "data" / "chestbreast"
    if (root / "test").is_dir():
        return root
    rng = np.random.default_rng(seed)
    for source, label, name, n_train, n_val in CHESTBREAST:
        arrays = np.load(_data_root() / source / f"{source}.npz")
        for split, count in (("train", n_train), ("val", n_val), ("test", None)):
            images = arrays[f"{split}_images"][arrays[f"{split}_labels"].ravel() == label]
            if count is not None:
                images = images[np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))]
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(images):
                Image.fromarray(image).save(folder / f"{index:05d}.png")
    return root


def _run(command: Sequence[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDPRUNE_QUIET": "1"}
    with log.open("w") as handle:
        return subprocess.run(list(command), stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode


def _medprune() -> list[str]:
    """The CLI as a module of this interpreter (works where the ``medprune`` script is not installed, e.g. with
    ``PYTHONPATH=src`` on a GPU machine)."""
    return [sys.executable, "-m", "medprune.cli.main"]


def _checkpoint(out: Path, dataset: str, seed: int) -> Path:
    return out / "train" / f"{dataset}-s{seed}" / "model.safetensors"


def train(
    out: Path,
    seeds: Sequence[int],
    device: str,
    jobs: int,
    extra: Sequence[str] = (),
    datasets: Sequence[str] = tuple(DATASETS),
) -> None:
    """Train every (dataset, seed) checkpoint of ``datasets`` that is not there yet."""
    fixture = prepare(out)
    commands = []
    for dataset, config in ((d, DATASETS[d]) for d in datasets):
        for seed in seeds:
            checkpoint = _checkpoint(out, dataset, seed)
            if checkpoint.is_file():
                continue
            recipe = config or DATASETS["pneumoniamnist"]
            command = [*_medprune(), "train", "--config", str(recipe), "--out-dir", str(checkpoint.parent)]
            command += ["--set", f"seed={seed}", "--set", f"device={device}", "--set", "progress=false"]
            command += [arg for pair in extra for arg in ("--set", pair)]
            if dataset == "chestbreast":
                command += ["--set", "dataset=folder", "--set", f"data_root={fixture}"]
            else:
                command += ["--set", f"data_root={_data_root()}"]
            commands.append((command, checkpoint.parent.with_suffix(".log")))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(lambda c: _run(*c), commands))
    failed = [str(log) for (_, log), code in zip(commands, codes, strict=True) if code != 0]
    if failed:
        raise SystemExit(f"training failed, see {failed}")


def compress(out: Path, device: str, jobs: int, extra: Sequence[str] = (), rules: Sequence[str] = tuple(RULES)) -> None:
    """Compress every trained checkpoint under each of ``rules`` (skipping finished runs)."""
    commands = []
    for checkpoint in sorted((out / "train").glob("*/model.safetensors")):
        for rule in rules:
            folder = out / "compress" / f"{checkpoint.parent.name}-{rule}"
            if (folder / "card.json").is_file() or (folder / "refusal.txt").is_file():
                continue
            command = [*_medprune(), "compress", str(checkpoint), "--out", str(folder), "--overwrite"]
            command += ["--set", f"device={device}", *RULES[rule][1]]
            command += [arg for pair in extra for arg in ("--set", pair)]
            if "chestbreast" in checkpoint.parent.name:
                command += ["--set", f"data_root={out / 'data' / 'chestbreast'}"]
            commands.append((command, folder))

    def one(command: list[str], folder: Path) -> None:
        log = folder.with_suffix(".log")
        code = _run(command, log)
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if code == 2 and not (folder / "card.json").is_file() and is_decision(last):  # refused: the line says why
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "refusal.txt").write_text(last + "\n")
        elif code != 0:
            print(f"compress failed ({code}): {log}: {last[:200]}", file=sys.stderr)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda c: one(*c), commands))


def _class_lost(card: dict) -> bool:
    """Whether a class the original found on test is never found by the compressed model."""
    before = {c["name"]: c["sensitivity"] or 0 for c in card["test_original"]["per_class"]}
    return any(before[c["name"]] > 0 and (c["sensitivity"] or 0) == 0 for c in card["test_compressed"]["per_class"])


def is_decision(refusal: str) -> bool:
    """Whether a compress exit-2 line is the decision rule refusing (no candidate passed), not a failed run."""
    return "no candidate rate of" in refusal


def rows(out: Path) -> list[dict[str, object]]:
    """One row per (checkpoint, rule): what shipped, its test drop and whether the promise held."""
    found = []
    for folder in sorted((out / "compress").iterdir()):
        if not folder.is_dir():
            continue
        name, rule = folder.name.rsplit("-", 1)
        dataset, seed = name.rsplit("-s", 1)
        tolerance = RULES[rule][0]
        device = (folder / "device.txt").read_text().strip() if (folder / "device.txt").is_file() else "cpu"
        row: dict[str, object] = {"dataset": dataset, "seed": int(seed), "rule": rule, "tolerance": tolerance}
        row["device"] = device
        if (folder / "card.json").is_file():
            card = json.loads((folder / "card.json").read_text())
            before, after = card["test_original"][METRIC], card["test_compressed"][METRIC]
            drop = round(before - after, 6)
            row.update(
                shipped=True,
                rate=card["choice"]["chosen rate"],
                macs_removed=card["totals"]["MACs removed (fraction)"],
                test_before=before,
                test_after=after,
                test_drop=drop,
                kept=drop <= tolerance + 1e-9,
                class_lost=_class_lost(card),
            )
        elif (folder / "refusal.txt").is_file():
            refusal = (folder / "refusal.txt").read_text().strip()
            if not is_decision(refusal):  # e.g. data not found: a failed run, not a refusal by the rule
                print(f"not a decision, left out (rerun it): {folder}: {refusal[:120]}", file=sys.stderr)
                continue
            row.update(shipped=False, refusal=refusal)
        else:
            continue
        found.append(row)
    return found


COLUMNS = [
    "dataset",
    "seed",
    "rule",
    "tolerance",
    "device",
    "shipped",
    "rate",
    "macs_removed",
    "test_before",
    "test_after",
    "test_drop",
]
COLUMNS += ["kept", "class_lost", "refusal"]


def _yes(value: object) -> bool:
    return value is True or value == "True"


class _RuleRuns:
    """One rule's runs (of one dataset, or all): what shipped, how many kept the promise, and the Wilson interval.

    A plain class, not a dataclass: the tests load this script by path, outside ``sys.modules``."""

    def __init__(self, rule: str, runs: list[dict[str, object]]) -> None:
        self.rule, self.runs = rule, runs

    @property
    def shipped(self) -> list[dict[str, object]]:
        return [r for r in self.runs if _yes(r.get("shipped"))]

    @property
    def kept(self) -> int:
        return sum(_yes(r["kept"]) for r in self.shipped)

    @property
    def macs(self) -> list[float]:
        return [float(str(r["macs_removed"])) for r in self.shipped]

    def cells(self) -> str:
        """``rule | tolerance | checkpoints | shipped``: the columns both tables open with."""
        label = f"{self.rule.split('_')[0]} | {RULES[self.rule][0] * 100:g} pt"
        return f"{label} | {len(self.runs)} | {len(self.shipped)}"

    def kept_cells(self) -> str:
        """``kept/shipped | Wilson interval``."""
        low, high = wilson_interval(self.kept, len(self.shipped))
        interval = f"[{low:.2f}, {high:.2f}]" if low is not None else "-"
        return f"{self.kept}/{len(self.shipped)} | {interval}"

    def mean_macs(self) -> str:
        return f"{np.mean(self.macs):.1%}" if self.macs else "-"


def _by_rule(table: Sequence[dict[str, object]], keep: Callable[[dict[str, object]], bool]) -> list[_RuleRuns]:
    """The rules present in ``table`` (in :data:`RULES` order), each with its runs that ``keep`` selects."""
    present = {str(r["rule"]) for r in table}
    return [_RuleRuns(rule, [r for r in table if r["rule"] == rule and keep(r)]) for rule in RULES if rule in present]


def markdown_table(table: Sequence[dict[str, object]]) -> str:
    """The calibration table from per-run rows (as :func:`rows` returns them or as read back from the CSV)."""
    lines = [
        "| dataset | rule | tolerance | checkpoints | shipped | refused | promise kept on test | 95% CI (Wilson) | "
        "classes lost | mean MACs removed (shipped) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in sorted({str(r["dataset"]) for r in table}):
        for group in _by_rule(table, lambda r, d=dataset: r["dataset"] == d):
            lost = sum(_yes(r.get("class_lost")) for r in group.shipped)
            refused = len(group.runs) - len(group.shipped)
            lines.append(
                f"| {dataset} | {group.cells()} | {refused} | {group.kept_cells()} | {lost} | {group.mean_macs()} |"
            )
    return "\n".join(lines)


def pooled_table(table: Sequence[dict[str, object]]) -> str:
    """Every dataset together, per rule and tolerance: the fraction of shipped models that kept the promise on test
    (Wilson interval over checkpoints), how many shipped, and the MACs they removed (mean, and how many removed at
    least half)."""
    lines = [
        "| rule | tolerance | checkpoints | shipped | promise kept on test | 95% CI (Wilson) | mean MACs removed "
        "(shipped) | shipped removing >= 50% of MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in _by_rule(table, lambda r: True):
        half = sum(m >= 0.5 for m in group.macs)
        lines.append(f"| {group.cells()} | {group.kept_cells()} | {group.mean_macs()} | {half} |")
    return "\n".join(lines)


_SMALLEST = re.compile(r"smallest tolerance this split certifies is ([0-9.]+)")
#: Validation images per dataset (PneumoniaMNIST and BreastMNIST: the official splits; chestbreast: the fixture).
VALIDATION_IMAGES = {"pneumoniamnist": 524, "breastmnist": 78, "chestbreast": sum(c[4] for c in CHESTBREAST)}


def certifiable_table(table: Sequence[dict[str, object]]) -> str:
    """What the validation split alone says a dataset can promise: per dataset, the smallest tolerance the certified
    rule could certify at its first candidate for each checkpoint (from the refusals at 1 point; a checkpoint that
    shipped at 1 point certifies 1 point or less), read from validation only, and the tolerance that would have let
    every checkpoint's first candidate through (the largest of them)."""
    lines = [
        "| dataset | validation images | checkpoints | smallest certifiable tolerance per checkpoint (points) | "
        "tolerance certifying all |",
        "|---|---|---|---|---|",
    ]
    for dataset in sorted({str(r["dataset"]) for r in table}):
        values: list[float] = []
        for r in sorted((r for r in table if r["dataset"] == dataset and r["rule"] == "certified"), key=_seed):
            found = _SMALLEST.search(str(r.get("refusal") or ""))
            if _yes(r.get("shipped")):
                values.append(RULES["certified"][0])  # certified at 1 point: at most that
            elif found:
                values.append(float(found.group(1)))
        if not values:
            continue
        shown = ", ".join(f"{v * 100:.1f}" for v in values)
        lines.append(
            f"| {dataset} | {VALIDATION_IMAGES.get(dataset, '?')} | {len(values)} | {shown} | {max(values) * 100:.1f} |"
        )
    return "\n".join(lines)


def _seed(row: dict[str, object]) -> int:
    return int(str(row["seed"]))


def read_csv(path: Path) -> list[dict[str, str]]:
    """Per-run rows of a committed calibration CSV."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def summary(out: Path, csv_path: Path | None) -> str:
    """The calibration table (markdown), and the per-run rows as CSV when ``csv_path`` is given."""
    table = rows(out)
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({c: r.get(c, "") for c in COLUMNS} for r in table)
    return markdown_table(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "train", "compress", "summary", "all"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "calibration")
    parser.add_argument("--seeds", default="4,5,6,7,8", help="training seeds (held out: no default was chosen on them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"subset of {', '.join(DATASETS)}")
    parser.add_argument("--train-set", action="append", default=[], help="KEY=VALUE for every training (smoke runs)")
    parser.add_argument("--rules", default=",".join(RULES), help=f"subset of {', '.join(RULES)}")
    parser.add_argument("--compress-set", action="append", default=[], help="KEY=VALUE for every compress run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.step in ("prepare", "all"):
        print(f"fixture: {prepare(args.out)}")
    if args.step in ("train", "all"):
        train(args.out, seeds, args.device, args.jobs, args.train_set, args.datasets.split(","))
    if args.step in ("compress", "all"):
        compress(args.out, args.device, args.jobs, args.compress_set, args.rules.split(","))
    if args.step in ("summary", "all"):
        print(summary(args.out, args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
