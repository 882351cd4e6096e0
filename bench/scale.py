"""Scale-out benchmark: sweep throughput (rows per second) in-process vs on Ray with 1 and 2 workers, and the fixed
cost of one task on each executor.

The sweep is real (PneumoniaMNIST from ``--data-root``, an untrained ``resnet_small`` at 28 px, LRP with random
sampling plus the random and magnitude controls, ``--seeds`` selection seeds, ``--rates`` rates, val and test): every
run writes a fresh folder, so scoring is included. Ray runs on a local cluster of ``--workers`` CPUs (one CPU per
task), started before the clock starts (its start-up is reported apart). Wall time and CPU time are both recorded;
CPU time is summed over this process and every process it started (Ray's workers, raylet, GCS), read from /proc, so
on a shared machine it says what the work cost while wall time also says how busy the machine was.

Overhead per task: ``--tasks`` tasks that do nothing but receive the sweep's shared inputs (model, training split,
evaluation tensors, through ``executor.put``), one at a time and all at once.

    .venv/bin/python bench/scale.py --data-root ../shared/data                 # local, ray x1, ray x2
    .venv/bin/python bench/scale.py --data-root ../shared/data --executors local ray2 --rates 0 0.2 0.4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medprune.checkpoint import save_checkpoint
from medprune.checkpoint.with_data import load_with_splits
from medprune.data import stack_samples
from medprune.executors import Executor, LocalExecutor, RayExecutor, Task
from medprune.models import create_model
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.scoring.request import ScoreRecipe

logger = logging.getLogger("bench.scale")
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU seconds of ``root`` (default: this process) and all its live descendants, from /proc."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def _noop(model: Any, train: Any, evaluation: Any) -> int:
    return len(evaluation)


def make_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return save_checkpoint(folder / "model", model, meta)


def time_sweep(executor: Executor, config: SweepConfig) -> dict[str, float]:
    """Rows, wall and CPU seconds of one fresh sweep on ``executor``."""
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    rows = len(run_sweep(config, executor=executor).rows)
    wall, cpu = time.perf_counter() - wall, tree_cpu_seconds() - cpu
    return {"rows": rows, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rows_per_s": round(rows / wall, 3)}


def task_overhead(executor: Executor, checkpoint: Path, data_root: str, tasks: int) -> dict[str, float]:
    """Milliseconds per do-nothing task that receives the sweep's shared inputs (sequential and all at once)."""
    model, _, splits = load_with_splits(str(checkpoint), device="cpu", data_root=data_root)
    evaluation = {s: stack_samples(getattr(splits, s), range(len(getattr(splits, s)))) for s in ("val", "test")}
    shared = (executor.put(model), executor.put(splits.train), executor.put(evaluation))
    list(executor.run([Task("warm-up", _noop, shared)]))
    started = time.perf_counter()
    for i in range(tasks):
        list(executor.run([Task(f"one-{i}", _noop, shared)]))
    one = (time.perf_counter() - started) / tasks
    started = time.perf_counter()
    list(executor.run([Task(f"all-{i}", _noop, shared) for i in range(tasks)]))
    many = (time.perf_counter() - started) / tasks
    return {"sequential_ms": round(1000 * one, 2), "batched_ms": round(1000 * many, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MEDPRUNE_DATA"), help="folder with pneumoniamnist/")
    parser.add_argument("--executors", nargs="+", default=["local", "ray1", "ray2"], help="local, ray1, ray2, ...")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--tasks", type=int, default=50, help="do-nothing tasks for the overhead per task")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.data_root:
        parser.error("--data-root (or $MEDPRUNE_DATA) is needed")
    torch.set_num_threads(1)  # one CPU per task everywhere: the local run is one worker
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": os.getloadavg(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(Path(tmp) / "train")
        for name in args.executors:
            config = SweepConfig(
                checkpoints=[str(checkpoint)],
                out=str(Path(tmp) / name),
                data_root=args.data_root,
                methods=["lrp"],
                samplings=["random"],
                rates=args.rates,
                scoring=ScoreRecipe(n_per_class=4),
                seeds=args.seeds,
            )
            started = time.perf_counter()
            if name == "local":
                executor: Executor = LocalExecutor()
            else:
                workers = int(name.removeprefix("ray"))
                executor = RayExecutor("local", init_options={"num_cpus": workers, "log_to_driver": False})
            startup = time.perf_counter() - started
            with executor:
                run = time_sweep(executor, config)
                run["startup_s"] = round(startup, 2)
                run.update(task_overhead(executor, checkpoint, args.data_root, args.tasks))
            run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            results["runs"][name] = run
            print(name, json.dumps(run), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
