"""Merge the parts `bench/study_gpu.sh` ran (one study folder per training seed x dataset) into one study folder that
`medprune study --config CONFIG --out TARGET` then resumes: finished checkpoints and sweeps are reused by their keys
(the device is not part of either key), an unfinished sweep resumes row by row, the report and claims are built once.

    python bench/study_merge.py PACKED_FOLDER runs/study-cpu

PACKED_FOLDER holds what study_gpu.sh wrote to its OUT (checkpoints-s<seed>.tar, runs.tar.xz). Nothing in TARGET is
overwritten: an entry already there is kept (and counted), so merging twice is harmless. The parts' task records
(study.json) are merged into TARGET/study.json, keeping TARGET's own record of a task it already has.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path


def _unpack(packed: Path, staging: Path) -> None:
    for archive in sorted(packed.glob("checkpoints-s*.tar")) + [packed / "runs.tar.xz"]:
        if archive.is_file():
            with tarfile.open(archive) as handle:
                handle.extractall(staging, filter="data")


def _move_if_new(item: Path, destination: Path, counts: dict[str, int]) -> None:
    """Move ``item`` to ``destination`` unless something is there already (then it is kept, and counted)."""
    if destination.exists():
        counts["kept"] += 1
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(item), destination)
    counts["moved"] += 1


def _move_new(source: Path, target: Path, counts: dict[str, int]) -> None:
    """Move every entry of ``source`` (two levels: group / item) into ``target`` unless it is there already."""
    for group in sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []:
        for item in sorted(group.iterdir()):
            _move_if_new(item, target / group.name / item.name, counts)


def merge(packed: Path, target: Path) -> dict[str, int]:
    """Merge the packed parts into ``target``; returns counts of moved and kept entries and merged tasks."""
    counts = {"moved": 0, "kept": 0, "tasks": 0, "parts": 0}
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / "study.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"format": "medprune-study/1"}
    tasks = manifest.setdefault("tasks", {})
    with tempfile.TemporaryDirectory(dir=target.parent) as staging_name:
        staging = Path(staging_name)
        _unpack(packed, staging)
        for part in sorted(p for p in staging.glob("part-*") if p.is_dir()):
            counts["parts"] += 1
            # checkpoints/<name>, sweeps/<variant-key>/<checkpoint>, rows/<variant-key>/<checkpoint>.jsonl
            if (part / "checkpoints").is_dir():
                for item in sorted((part / "checkpoints").iterdir()):
                    _move_if_new(item, target / "checkpoints" / item.name, counts)
            _move_new(part / "sweeps", target / "sweeps", counts)
            _move_new(part / "rows", target / "rows", counts)
            record = part / "study.json"
            if record.is_file():
                for task, value in json.loads(record.read_text()).get("tasks", {}).items():
                    if task not in tasks:
                        tasks[task] = value
                        counts["tasks"] += 1
        logs = target / "gpu-parts"
        logs.mkdir(exist_ok=True)
        for extra in sorted(staging.glob("part-*.*")):  # the parts' configs and logs, for the record
            shutil.copy2(extra, logs / extra.name)
    tmp = manifest_path.with_name(f".{manifest_path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False))
    tmp.replace(manifest_path)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packed", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    if not (args.packed / "runs.tar.xz").is_file():
        print(f"error: {args.packed}/runs.tar.xz not found (the OUT folder of bench/study_gpu.sh)", file=sys.stderr)
        return 2
    print(merge(args.packed, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
