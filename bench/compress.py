"""Compress benchmark (issue 10 acceptance): ``medprune compress`` on the trained PneumoniaMNIST and BreastMNIST
checkpoints, and the CPU speed-up of compress's physical removal on resnet50 / vgg19 at 224 px.

Accuracy runs: one ``run_compress`` per checkpoint with compress's defaults (the choice of rate is made on the
validation split; the test split is read once, at the end). Wall time is the whole command, with ``--threads``
torch threads. The bar: >= 50% of the units and of the MACs removed, test balanced accuracy within 1 point of the
unpruned model, <= 10 minutes on 2 CPU cores.

Speed runs: random init, 224 px; masks from weight-magnitude scores ranked with compress's ranking (global scope,
``--normalize``, residual writers coupled) at 50%; ``remove_units`` (what compress writes) against the unpruned model,
timed alternately by ``bench/pruning.py``'s ``paired_latency``. The bar: speed-up >= 0.8 x MACs reduction.

    .venv/bin/python bench/compress.py accuracy --checkpoint /path/pneumoniamnist/model.safetensors --out runs/bench
    .venv/bin/python bench/compress.py speed --models resnet50 vgg19 --threads 1 --batch 4 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from medprune.compression.floor import ranked_candidate
from medprune.config import build_config
from medprune.models import create_model
from medprune.pruning import coupled_groups, model_cost, remove_units
from medprune.pruning.cost import MacsMeter
from medprune.runs.compress import CompressConfig, run_compress
from medprune.scoring.registry import score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pruning import paired_latency  # noqa: E402 - bench/pruning.py, a sibling script

logger = logging.getLogger("bench.compress")


def accuracy(checkpoint: str, out: str, data_root: str | None, overrides: dict) -> dict:
    """Run compress with its defaults (what ``medprune compress CHECKPOINT`` does) plus ``overrides``; the headline
    numbers of its card and the wall time."""
    started = time.perf_counter()
    options = dict(overrides)
    config = build_config(
        CompressConfig, overrides={"checkpoint": checkpoint, "out": out, "data_root": data_root, **options}
    )
    result = run_compress(config)
    record = result.record
    row = {
        "checkpoint": checkpoint,
        "settings": options,
        "rate": result.rate,
        "units_removed": record.totals["units removed (fraction)"],
        "params_removed": record.totals["params removed (fraction)"],
        "macs_removed": record.totals["MACs removed (fraction)"],
        "val_baseline": record.choice["validation baseline"],
        "val_final": record.choice["final validation value"],
        "test_ba_original": record.test_original.balanced_accuracy,
        "test_ba_compressed": record.test_compressed.balanced_accuracy,
        "test_worst_recall_original": record.test_original.worst_class_recall,
        "test_worst_recall_compressed": record.test_compressed.worst_class_recall,
        "latency": [x.__dict__ for x in record.latency],
        "checks": record.checks,
        "timings": record.timings,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    row["test_ba_drop"] = row["test_ba_original"] - row["test_ba_compressed"]
    row["passes"] = bool(
        row["units_removed"] >= 0.5
        and row["macs_removed"] >= 0.5
        and row["test_ba_drop"] <= 0.01
        and row["wall_s"] <= 600
    )
    return row


def speed(name: str, rate: float, normalize: str, batch: int, repeats: int, macs_floor: bool = True) -> dict:
    """CPU speed-up of compress's physical removal at ``rate`` against the MACs reduction (``macs_floor``: the cut
    is deepened until it also removes ``rate`` of the MACs, as compress's default does)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=224).eval()
    x = torch.randn(batch, 3, 224, 224)
    scores = score(model, x[:1], torch.zeros(1, dtype=torch.long), method="magnitude")
    meter = MacsMeter(model) if macs_floor else None
    candidate = ranked_candidate(scores, rate, meter=meter, normalize=normalize, couplings=coupled_groups(model))
    masks = candidate.masks
    small = remove_units(model, masks).eval()
    before, after = model_cost(model), model_cost(small)
    base_wall, small_wall, base_cpu, small_cpu = paired_latency(model, small, x, repeats)
    reduction = before["macs"] / after["macs"]
    return {
        "model": name,
        "rate": rate,
        "unit_rate": candidate.unit_rate,
        "macs_floor": candidate.macs_floor,
        "normalize": normalize,
        "macs_reduction": reduction,
        "wall_speedup": base_wall / small_wall,
        "cpu_speedup": base_cpu / small_cpu,
        "wall_efficiency": base_wall / small_wall / reduction,
        "cpu_efficiency": base_cpu / small_cpu / reduction,
        "params": [before["params"], after["params"]],
        "macs": [before["macs"], after["macs"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--checkpoint", required=True)
    acc.add_argument("--out", required=True)
    acc.add_argument("--data-root")
    acc.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override one setting")
    fast = sub.add_parser("speed")
    fast.add_argument("--models", nargs="+", default=["resnet50", "vgg19"])
    fast.add_argument("--rate", type=float, default=0.5)
    fast.add_argument("--normalize", default="none")  # compress's ranking
    fast.add_argument("--batch", type=int, default=4)
    fast.add_argument("--repeats", type=int, default=5)
    fast.add_argument("--macs-floor", action=argparse.BooleanOptionalAction, default=True, help="as compress")
    for p in (acc, fast):
        p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    if args.mode == "accuracy":
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        rows = [accuracy(args.checkpoint, args.out, args.data_root, overrides)]
    else:
        rows = [speed(m, args.rate, args.normalize, args.batch, args.repeats, args.macs_floor) for m in args.models]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
