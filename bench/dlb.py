"""DL-Backtrace speed: medprune's native DLB vs one forward pass vs the dl-backtrace 0.1.24 package, on the CPU.

Per model (random init, 224 px, batch 1): the median seconds of a forward pass and of ``dlb_relevance`` over all unit
groups (which includes its own forward pass), timed alternately back to back so that load from other jobs on a shared
machine hits both alike; ``ratio = dlb / forward`` (target <= 4). Both wall-clock and process CPU seconds are taken:
on a shared, oversubscribed machine the CPU-time ratio is the stable one. Where ``.oracle-venv`` exists (see
``scripts/build_dlb_oracle.sh``), the package is run once on the same weights and image in a subprocess
(``DLBacktrace(...)`` + ``run_task``, import excluded; the package forces 1 thread) and ``speed-up = package / ours``
is reported against ours at 1 thread, by CPU time and by wall time (targets: >= 50x on VGG19 and ResNet50). The
package cannot backtrace timm ViTs (docs/dlb.md), so it is not run on vit_b_16.

    .venv/bin/python bench/dlb.py                                   # vgg19, resnet50, vit_b_16; package where possible
    .venv/bin/python bench/dlb.py --models resnet50 --repeats 5 --no-package
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.scoring.dlb import dlb_relevance

REPO = Path(__file__).resolve().parents[1]
ORACLE_PYTHON = REPO / ".oracle-venv" / "bin" / "python"
RUNNER = REPO / "scripts" / "dlb_oracle_runner.py"
PACKAGE_MODELS = ("vgg19", "resnet50")


def _seconds(fn) -> tuple[float, float]:  # noqa: ANN001 - any zero-argument callable
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def paired_times(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median wall/CPU seconds of a forward pass and of a full DLB pass, alternated after one warm-up each."""
    groups = unit_groups(model)
    target = torch.zeros(x.shape[0], dtype=torch.long)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def dlb() -> None:
        dlb_relevance(model, x, target, groups)

    forward()
    dlb()
    forwards, dlbs = [], []
    for _ in range(repeats):
        forwards.append(_seconds(forward))
        dlbs.append(_seconds(dlb))
    return {
        "forward_s": statistics.median(t[0] for t in forwards),
        "dlb_s": statistics.median(t[0] for t in dlbs),
        "forward_cpu_s": statistics.median(t[1] for t in forwards),
        "dlb_cpu_s": statistics.median(t[1] for t in dlbs),
    }


def package_seconds(name: str, model: torch.nn.Module, x: torch.Tensor, image_size: int) -> dict | None:
    """The package's own wall and CPU seconds for one image (construction + run_task), or None if it fails."""
    with tempfile.TemporaryDirectory(prefix="dlb-bench-") as tmp:
        work = Path(tmp)
        (work / "spec.json").write_text(json.dumps({"name": name, "num_classes": 2, "image_size": image_size}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / "weights.safetensors"))
        save_file({"x": x.contiguous()}, str(work / "input.safetensors"))
        done = subprocess.run([str(ORACLE_PYTHON), str(RUNNER), str(work)], capture_output=True, text=True)
        result = json.loads((work / "result.json").read_text()) if (work / "result.json").is_file() else {}
        if done.returncode != 0 or "seconds" not in result:
            print(f"package failed on {name}: {result.get('error') or done.stderr[-500:]}", flush=True)
            return None
        return {"package_s": float(result["seconds"]), "package_cpu_s": float(result["cpu_seconds"])}


def bench(name: str, image_size: int, repeats: int, run_package: bool) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=image_size).eval()
    x = torch.randn(1, 3, image_size, image_size)
    row: dict = {"model": name, **paired_times(model, x, repeats)}
    row["ratio"] = row["dlb_s"] / row["forward_s"]
    row["ratio_cpu"] = row["dlb_cpu_s"] / row["forward_cpu_s"]
    if run_package and name in PACKAGE_MODELS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the package runs single-threaded; time ours alike for the comparison
        try:
            one = paired_times(model, x, max(1, repeats // 2))
        finally:
            torch.set_num_threads(threads)
        row.update({"dlb_1t_s": one["dlb_s"], "dlb_1t_cpu_s": one["dlb_cpu_s"]})
        pkg = package_seconds(name, model, x, image_size)
        if pkg is not None:
            row.update(pkg)
            row["speedup"] = pkg["package_s"] / one["dlb_s"]
            row["speedup_cpu"] = pkg["package_cpu_s"] / one["dlb_cpu_s"]
    return row


COLUMNS = {
    "forward s": "forward_s",
    "DLB s": "dlb_s",
    "DLB/fwd": "ratio",
    "fwd CPU s": "forward_cpu_s",
    "DLB CPU s": "dlb_cpu_s",
    "DLB/fwd CPU": "ratio_cpu",
    "DLB 1-thread s": "dlb_1t_s",
    "DLB 1-thread CPU s": "dlb_1t_cpu_s",
    "package s": "package_s",
    "package CPU s": "package_cpu_s",
    "speed-up": "speedup",
    "speed-up CPU": "speedup_cpu",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet50", "vit_b_16"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-package", action="store_true", help="skip the dl-backtrace package comparison")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    run_package = not args.no_package and ORACLE_PYTHON.is_file()
    if not args.no_package and not run_package:
        print("no .oracle-venv: package comparison skipped (bash scripts/build_dlb_oracle.sh)")
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|", flush=True)
    rows = []
    for name in args.models:
        r = bench(name, args.image_size, args.repeats, run_package)
        rows.append(r)
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else "-" for k in COLUMNS.values()]
        print(f"| {r['model']} | " + " | ".join(cells) + " |", flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
