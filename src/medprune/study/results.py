"""The study's results: each sweep's rows (tagged with the grid point) in one file per sweep, merged into one table.

The study keeps exactly the rows each finished sweep returned, in ``<out>/rows/<variant>-<key>/<checkpoint>.jsonl``
(written atomically once the sweep is finished), so a finished sweep is never even loaded again. The merged table
``<out>/rows.jsonl`` (with the per-image columns the report's bootstraps use) and ``<out>/results.csv`` (without)
are rebuilt from those files.

>>> tag_rows([{"method": "lrp"}], variant="main", train_seed=1, family="vgg", run="vgg_small-x-s1-ab")[0]["family"]
'vgg'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medprune.atomic import atomic_writer
from medprune.sweep.table import BASELINE, Row, RowLog, row_key, write_csv

__all__ = ["STUDY_COLUMNS", "tag_rows", "write_rows", "read_rows", "merge_rows", "write_results", "row_digest"]

#: Columns the study adds to every sweep row.
STUDY_COLUMNS: tuple[str, ...] = ("variant", "train_seed", "family", "run")


def tag_rows(rows: Sequence[Row], *, variant: str, train_seed: int, family: str, run: str) -> list[Row]:
    """Copies of ``rows`` with the grid point's columns (:data:`STUDY_COLUMNS`)."""
    tags = {"variant": variant, "train_seed": train_seed, "family": family, "run": run}
    return [{**row, **tags} for row in rows]


def write_rows(rows: Sequence[Row], path: str | Path) -> Path:
    """Write rows as JSON lines atomically (temporary file, ``fsync``, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, durable=True) as handle:
        for row in rows:
            handle.write(json.dumps(row, allow_nan=True) + "\n")
    return path


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a file written by :func:`write_rows`."""
    return RowLog(path).read()


def merge_rows(tables: Sequence[Sequence[Row]]) -> list[Row]:
    """One table from the sweeps' rows: a checkpoint's baseline rows once, every other row exactly once.

    Raises:
        ValueError: two sweeps (variants) produced a pruned row with the same key: their options differ only in
            fields the row key does not hold, so the report could not tell them apart.
    """
    merged: dict[tuple[str, ...], Row] = {}
    for rows in tables:
        for row in rows:
            key = row_key(row)
            if key in merged and row["method"] != BASELINE and merged[key].get("variant") != row.get("variant"):
                raise ValueError(
                    f"variants {merged[key].get('variant')!r} and {row.get('variant')!r} produce the same row "
                    f"({row['method']}/{row['sampling']} at rate {row['rate']} on {row.get('run')}); make the "
                    "variants differ in a setting the rows record (protocol, scope, normalize, sign, recalibrate, "
                    "seeds, n_per_class, target)"
                )
            merged.setdefault(key, row)
    return list(merged.values())


def write_results(rows: Sequence[Row], out: str | Path) -> tuple[Path, Path]:
    """``<out>/rows.jsonl`` (all columns) and ``<out>/results.csv`` (without per-image columns), atomically."""
    out = Path(out)
    return write_rows(rows, out / "rows.jsonl"), write_csv(rows, out / "results.csv")


def row_digest(rows: Sequence[Row], extra: Any = None) -> str:
    """A short hash of the rows' keys and metrics (what the report and claims are built from) plus ``extra``."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=row_key):
        stable = {k: v for k, v in row.items() if k not in ("seconds", "finished_at")}
        digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
