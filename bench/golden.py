"""Golden run: a small fixed train, score, sweep, compress and study whose outputs are committed as text.

Training is compared too, but the later stages read a committed checkpoint (``golden/model.safetensors``), so a
change to training alone does not move them. A refactor that claims "behaviour unchanged" runs this before and after
and compares (``--check``): every table whose computation is unchanged must come out byte-identical. Timing columns,
wall-clock fields and absolute paths are dropped before writing; everything else (metrics, score checksums, chosen
rates, claims) is kept.

    .venv/bin/python bench/golden.py --out bench/golden            # write the reference
    .venv/bin/python bench/golden.py --check bench/golden          # run again and diff against it

About 3-5 minutes on 2 CPU cores; one thread, fixed seeds. Real PneumoniaMNIST from ``$MEDPRUNE_DATA``.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from safetensors.numpy import load_file

#: Keys whose values depend on the clock, the machine or the folder the run happened in.
UNSTABLE_KEYS = {
    "seconds",
    "finished_at",
    "wall_time_s",
    "timings",
    "latency",
    "created_at",
    "started_at",
    "time",
    "path",
    "out",
    "checkpoint",
    "data_root",
    "host",
    "versions",
    "python",
    "torch",
    "platform",
    "cpu_seconds",
    "elapsed_s",
}

#: The checkpoint score / sweep / compress read: resnet_small trained 1 epoch on 256 PneumoniaMNIST images by the
#: first golden run (the ``train`` stage above, before any refactor), committed beside the reference outputs.
INPUT_CHECKPOINT = Path(__file__).resolve().parent / "golden" / "model.safetensors"

STUDY = {
    "architectures": ["resnet_small", "vgg_small"],
    "datasets": ["pneumoniamnist"],
    "seeds": [0, 1],
    "threads": 1,
    "progress": False,
    "train": {
        "image_size": 28,
        "epochs": 1,
        "max_train_samples": 128,
        "max_eval_samples": 64,
        "bn_recalibration_samples": 64,
    },
    "sweep": {
        "methods": ["lrp"],
        "samplings": ["random"],
        "controls": ["random"],
        "rates": [0.0, 0.3],
        "seeds": [0],
        "n_per_class": 2,
        "protocols": ["paper"],
    },
    "claims": {"n_resamples": 200},
}


def _medprune(*args: str) -> None:
    cli = Path(sys.executable).with_name("medprune")
    subprocess.run([str(cli), "--quiet", *args], check=True)


#: Folder -> placeholder, so text that names a path (the card's reproduce command) is the same in every folder.
PLACEHOLDERS: dict[str, str] = {str(INPUT_CHECKPOINT.parent): "<input>"}


def _scrub(value: object) -> object:
    """Drop unstable keys recursively, replace folders by placeholders and round floats to 10 significant digits."""
    if isinstance(value, str):
        for folder, placeholder in PLACEHOLDERS.items():
            value = value.replace(folder, placeholder)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in UNSTABLE_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value


def _json_text(path: Path) -> str:
    return json.dumps(_scrub(json.loads(path.read_text())), indent=1, sort_keys=True) + "\n"


def _jsonl_text(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return "".join(json.dumps(_scrub(r), sort_keys=True) + "\n" for r in rows)


def _csv_text(path: Path) -> str:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return ""
    columns = [c for c in rows[0] if c not in UNSTABLE_KEYS]
    lines = [",".join(columns)]
    lines += [",".join(row[c] for c in columns) for row in rows]
    return "\n".join([lines[0], *sorted(lines[1:])]) + "\n"


def _score_checksums(folder: Path) -> str:
    """One line per score file: its tensors' names and a SHA-256 of their bytes (metadata and paths ignored)."""
    lines = []
    for path in sorted(folder.rglob("*.safetensors")):
        tensors = load_file(str(path))
        digest = hashlib.sha256()
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].tobytes())
        lines.append(f"{path.relative_to(folder)} {len(tensors)} {digest.hexdigest()[:16]}")
    return "\n".join(lines) + "\n"


def run(work: Path, data_root: str) -> dict[str, str]:
    """Run every stage in ``work`` and return ``{output name: normalised text}``."""
    outputs: dict[str, str] = {}
    PLACEHOLDERS.update({str(work): "<work>", data_root: "<data>"})
    common = ["--set", "dataset=pneumoniamnist", "--set", "model=resnet_small", "--set", "epochs=1"]
    common += ["--set", "max_train_samples=256", "--set", "max_eval_samples=128", "--set", "device=cpu"]
    common += ["--set", "amp=false", "--set", "progress=false", "--set", "seed=0"]
    _medprune("train", "--data-root", data_root, "--out-dir", str(work / "train"), *common)
    outputs["train_metrics.json"] = _json_text(work / "train" / "metrics.json")
    _medprune(
        "train", "--data-root", data_root, "--out-dir", str(work / "train_norecal"), *common,
        "--set", "bn_recalibration=false",
    )  # fmt: skip
    outputs["train_norecal_metrics.json"] = _json_text(work / "train_norecal" / "metrics.json")
    checkpoint = str(INPUT_CHECKPOINT)  # committed, so the later stages do not move when training does

    _medprune(
        "score", checkpoint, "--methods", "lrp,ig,dlb,random,magnitude,activation,taylor",
        "--samplings", "random,confidence", "--out", str(work / "scores"),
        "--set", "n_per_class=3", "--set", f"data_root={data_root}",
    )  # fmt: skip
    outputs["score_checksums.txt"] = _score_checksums(work / "scores")

    sweep = {
        "checkpoints": [checkpoint],
        "data_root": data_root,
        "methods": ["lrp"],
        "samplings": ["random"],
        "controls": ["random", "magnitude"],
        "rates": [0.0, 0.3, 0.6],
        "seeds": [0],
        "n_per_class": 2,
        "finetune_epochs": [0, 1],
        "finetune_samples": 64,
        "recalibrate": "bn",
        "recalibrate_samples": 64,
        "couplings": True,
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    _medprune("sweep", "--config", str(work / "sweep.yaml"), "--out", str(work / "sweep"))
    outputs["sweep_results.csv"] = _csv_text(work / "sweep" / "results.csv")

    compress = {
        "data_root": data_root,
        "rates": [0.3, 0.5],
        "n_per_class": 3,
        "sampling": "random",
        "finetune_steps": 8,
        "max_train_samples": 128,
        "recalibration_samples": 64,
        "latency_repeats": 1,
        "latency_threads": 1,
        "tolerance": 0.05,
    }
    (work / "compress.yaml").write_text(yaml.safe_dump(compress))
    _medprune("compress", checkpoint, "--config", str(work / "compress.yaml"), "--out", str(work / "compress"))
    outputs["compress_search.jsonl"] = _jsonl_text(work / "compress" / "search.jsonl")
    outputs["compress_card.json"] = _json_text(work / "compress" / "card.json")

    (work / "study.yaml").write_text(yaml.safe_dump({**STUDY, "data_root": data_root}))
    _medprune("study", "--config", str(work / "study.yaml"), "--out", str(work / "study"))
    for path in sorted((work / "study").rglob("claims.csv")):
        outputs["study_claims.csv"] = _csv_text(path)
    for path in sorted((work / "study").glob("results.csv")):
        outputs["study_results.csv"] = _csv_text(path)
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the normalised outputs here")
    group.add_argument("--check", type=Path, help="compare a fresh run against the outputs in this folder")
    parser.add_argument("--work", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data_root = os.environ.get("MEDPRUNE_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        outputs = run(work, data_root)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in outputs.items():
            (args.out / name).write_text(text)
        print(f"wrote {len(outputs)} files to {args.out}")
        return 0
    changed = 0
    for name, text in outputs.items():
        reference = (args.check / name).read_text() if (args.check / name).exists() else ""
        if reference == text:
            print(f"identical  {name}")
            continue
        changed += 1
        diff = difflib.unified_diff(reference.splitlines(), text.splitlines(), "before", "after", lineterm="", n=0)
        print(f"CHANGED    {name}")
        print("\n".join(list(diff)[:40]))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
