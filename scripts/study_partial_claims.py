"""Claims of an unfinished study from the sweeps it has finished (interim numbers while the grid is still running).

The study writes its claims only when every sweep is done; this computes the same claims (same code, same settings)
over the finished sweeps' rows and says in the scale line which checkpoints are in and which are missing.

    python scripts/study_partial_claims.py configs/study-cpu.yaml runs/study-cpu runs/study-cpu-partial \
        --data-root "$MEDPRUNE_DATA"
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medprune.config import build_config
from medprune.runs.study import StudyConfig, plan, rows_path, study_scale
from medprune.study.claims import compute_claims
from medprune.study.claims_report import claims_markdown
from medprune.study.results import merge_rows, read_rows
from medprune.sweep.table import write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the study's config file")
    parser.add_argument("study", type=Path, help="the study's output folder (study.json, rows/)")
    parser.add_argument("out", type=Path, help="where claims.csv and claims.md go")
    parser.add_argument("--data-root")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = build_config(StudyConfig, args.config, {"data_root": args.data_root, "out": str(args.study)})
    todo = plan(config)
    done = json.loads((args.study / "study.json").read_text())["tasks"]
    finished = [s for s in todo.sweeps if f"sweep/{s.name}" in done]
    if not finished:
        raise SystemExit(f"{args.study}: no finished sweep yet")
    rows = merge_rows([read_rows(rows_path(args.study, s)) for s in finished])
    points = [s.point for s in finished]
    missing = [s.point.name for s in todo.sweeps if s not in finished]
    scale = study_scale(points, finished, config.device)
    scale.notes.append(f"PARTIAL: {len(finished)} of {len(todo.sweeps)} sweeps finished; missing: {', '.join(missing)}")
    claims = compute_claims(rows, {p.architecture: p.family for p in todo.points}, todo.claims)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(claims, args.out / "claims.csv")
    (args.out / "claims.md").write_text(claims_markdown(claims, scale, todo.claims), encoding="utf-8")
    print(f"{len(rows)} rows from {len(finished)} sweeps -> {args.out / 'claims.md'}")


if __name__ == "__main__":
    main()
