"""The sweep's results table: tidy rows keyed by their parameters, written durably one row at a time.

A row is a flat ``dict`` (one model x dataset x method x sampling x setting x selection seed x rate x split: every
pruned model is evaluated on ``val`` and on ``test``, one row each, told apart by the ``split`` column). Rows are
appended to a JSON-lines log (``rows.jsonl``; ``flush`` + ``fsync`` after every row) so a killed sweep loses at most the
row it was computing; a partial last line left by a kill is ignored on reading and cut off before the next append.
The tidy CSV is rewritten (atomically) from the log without the per-image columns (:data:`BLOB_COLUMNS`: predicted
classes, and the labels in baseline rows, as base64 bytes; :func:`decode_classes`), which stay in the log for the
report's bootstraps. No pandas: rows are plain dicts, columns are computed as the union over rows.

>>> row = {"checkpoint": "ab12", "dataset": "d", "method": "lrp", "sampling": "random", "rate": 0.3}
>>> row_key(row)[-2:]
('0.300000', '')
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprune.atomic import atomic_writer, disk_full_is_user_error

logger = logging.getLogger(__name__)

Row = dict[str, Any]

#: The method and every option of it: what tells two curves of one model on one dataset apart.
#: ``seed`` is the selection seed; ``recalibrate`` (``none`` / ``bn``) and ``recalibrate_samples`` say what followed
#: masking; ``couplings`` whether residual writers were pruned together.
METHOD_FIELDS: tuple[str, ...] = (
    "method",
    "sampling",
    "sign",
    "target",
    "n_per_class",
    "seed",
    "scope",
    "normalize",
    "recalibrate",
    "recalibrate_samples",
    "couplings",
)
#: Parameters that identify a row; two rows with equal keys are the same measurement (the order fixes row ids).
#: ``split`` (``val`` / ``test``) is the split the row was evaluated on. A fine-tuned row adds its recovery
#: (:func:`recovery_key`) before ``rate``.
KEY_FIELDS: tuple[str, ...] = ("checkpoint", "dataset", *METHOD_FIELDS, "rate", "split")
#: Recovery beyond recalibration (issue 10): fine-tuning epochs after masking, and distillation from the unpruned
#: model. They came after the first sweeps: a row without them reads as these values, and a row with these values has
#: the key (and row id) it had before they existed.
RECOVERY_DEFAULTS: dict[str, Any] = {"finetune_epochs": 0, "distill": False}
RECOVERY_FIELDS: tuple[str, ...] = tuple(RECOVERY_DEFAULTS)
#: The fine-tuning recipe a fine-tuned row records (and is keyed by); the ``distill_*`` ones only when it distils.
FINETUNE_FIELDS: tuple[str, ...] = ("finetune_lr", "finetune_batch_size", "finetune_samples")
DISTILL_FIELDS: tuple[str, ...] = ("distill_temperature", "distill_weight")
#: Every column a recovery may add to a row's key.
RECOVERY_COLUMNS: tuple[str, ...] = (*RECOVERY_FIELDS, *FINETUNE_FIELDS, *DISTILL_FIELDS)
#: Descriptive columns first in the CSV, in this order; metrics and per-class columns follow.
LEAD_COLUMNS: tuple[str, ...] = (
    "row_id",
    "model",
    "dataset",
    "checkpoint",
    *METHOD_FIELDS,
    *RECOVERY_FIELDS,
    "rate",
    "split",
    "achieved_rate",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "auroc",
    "worst_recall",
    "n_images",
    "params_removed",
    "macs_removed",
    "params_removed_fraction",
    "macs_removed_fraction",
)
TAIL_COLUMNS: tuple[str, ...] = ("seconds", "finished_at")
#: Per-image columns kept in ``rows.jsonl`` only: ``predictions`` (predicted class per image of the split, in
#: dataset order) and, in baseline rows, ``labels``; both base64 of uint8 (:func:`encode_classes`).
BLOB_COLUMNS: tuple[str, ...] = ("predictions", "labels")
#: Integer columns read back from CSV as ints.
INT_COLUMNS: frozenset[str] = frozenset(
    {
        "n_per_class",
        "seed",
        "n_test",
        "n_images",
        "recalibrate_samples",
        "params_removed",
        "macs_removed",
        "finetune_epochs",
        "finetune_batch_size",
        "finetune_samples",
    }
)
#: Columns read back from CSV as text; every other non-empty cell is a number.
TEXT_COLUMNS: frozenset[str] = frozenset(
    {
        "row_id",
        "model",
        "dataset",
        "checkpoint",
        "method",
        "sampling",
        "sign",
        "target",
        "scope",
        "normalize",
        "recalibrate",
        "couplings",
        "distill",
        "split",
        "finished_at",
    }
)
#: Columns every row of a results table has (a table without them is not a sweep's: refused naming them).
REQUIRED_COLUMNS: tuple[str, ...] = ("method", "rate")
#: ``method`` of the unpruned reference row of each model x dataset.
BASELINE = "baseline"


def format_rate(rate: float) -> str:
    """Canonical text of a rate used in keys (6 decimals: 0.3 and 0.30000000000000004 are the same rate)."""
    return f"{float(rate):.6f}"


def encode_classes(classes: Any) -> str:
    """Class indices (0..255) as compact text: base64 of one uint8 per image."""
    array = np.asarray(classes)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("class indices must lie in 0..255 to be stored per image")
    return base64.b64encode(array.astype(np.uint8).tobytes()).decode("ascii")


def decode_classes(text: str) -> np.ndarray:
    """The int64 class indices of :func:`encode_classes`."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).astype(np.int64)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1")


def _canonical(value: Any) -> str:
    if value is None or value == "":
        return "None"
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def finetune_epochs(row: Row) -> int:
    """The fine-tuning epochs of a row (0 when it has none: rows from before fine-tuning existed)."""
    value = row.get("finetune_epochs")
    return 0 if value is None or value == "" else int(float(value))


def recovery_key(row: Row) -> tuple[str, ...]:
    """The key parts of a fine-tuned row's recovery (epochs, distillation and the recipe); ``()`` when not fine-tuned.

    Values are canonical text, so a row read back from CSV (``"True"``, ``32.0``) has the key it was written with.

    >>> recovery_key({"finetune_epochs": 0, "distill": False})
    ()
    >>> recovery_key({"finetune_epochs": 2, "distill": False, "finetune_lr": 0.001, "finetune_batch_size": 32})
    ('finetune_epochs=2', 'distill=False', 'finetune_lr=0.001', 'finetune_batch_size=32', 'finetune_samples=None')
    """
    epochs = finetune_epochs(row)
    if epochs == 0:
        return ()
    distill = _flag(row.get("distill"))
    recipe = FINETUNE_FIELDS + (DISTILL_FIELDS if distill else ())
    return (f"finetune_epochs={epochs}", f"distill={distill}", *(f"{f}={_canonical(row.get(f))}" for f in recipe))


def recovery_label(row: Row) -> str:
    """Short text of a row's recovery beyond recalibration: ``""``, ``+ft2`` (2 epochs) or ``+ft2+kd`` (distilled).

    >>> recovery_label({"finetune_epochs": 2, "distill": True}), recovery_label({"method": "lrp"})
    ('+ft2+kd', '')
    """
    epochs = finetune_epochs(row)
    if epochs == 0:
        return ""
    return f"+ft{epochs}" + ("+kd" if _flag(row.get("distill")) else "")


def with_recovery_defaults(row: Row) -> Row:
    """``row`` (a sweep row: it has a ``method``) with :data:`RECOVERY_DEFAULTS` filled in where missing, in place."""
    if "method" in row:
        for name, value in RECOVERY_DEFAULTS.items():
            if row.get(name) is None or row.get(name) == "":
                row[name] = value
    return row


def row_key(row: Row) -> tuple[str, ...]:
    """The identifying parameters of ``row`` as a tuple of strings (missing fields count as empty).

    :data:`KEY_FIELDS`, with :func:`recovery_key` before ``rate`` (nothing for a row that was not fine-tuned, so its
    key is the one it had before fine-tuning existed).
    """
    values = tuple(format_rate(row[f]) if f == "rate" else str(row.get(f, "")) for f in KEY_FIELDS)
    return values[:-2] + recovery_key(row) + values[-2:]


def row_id(row: Row) -> str:
    """A short stable id derived from :func:`row_key`."""
    return hashlib.sha1("|".join(row_key(row)).encode()).hexdigest()[:16]


class RowLog:
    """Append-only JSON-lines log of finished rows, safe against ``SIGKILL``.

    Args:
        path: the ``.jsonl`` file (created with its folder on the first append).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[Row]:
        """All complete rows, each row id once (the last complete line of an id wins, in the place of its first).

        A truncated or unreadable last line (a kill mid-write) is skipped with a warning; duplicated ids (two writers
        on one folder before folders were locked) are dropped with a warning.
        """
        if not self.path.is_file():
            return []
        rows: dict[tuple[str, ...], Row] = {}
        lines = self.path.read_bytes().split(b"\n")
        complete = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if index == len(lines) - 1:
                    logger.warning("ignoring a partial last line in %s (an interrupted write)", self.path)
                    continue
                raise ValueError(f"{self.path} line {index + 1} is not valid JSON; the log is damaged") from None
            if not isinstance(row, dict):
                raise ValueError(f"{self.path} line {index + 1} is not a row (a JSON object); the log is damaged")
            complete += 1
            rows[row_key(row)] = with_recovery_defaults(row)
        if complete > len(rows):
            logger.warning(
                "%s holds %d duplicated row(s); each row id is kept once (the last one written)",
                self.path,
                complete - len(rows),
            )
        return list(rows.values())

    def finished(self) -> dict[tuple[str, ...], Row]:
        """Rows already in the log by :func:`row_key` (later duplicates win)."""
        return {row_key(row): row for row in self.read()}

    def _cut_partial_tail(self) -> None:
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, row: Row) -> None:
        """Write one row durably (one line, ``flush`` + ``fsync``).

        A partial last line (a kill mid-write) is cut off first; a write that fails (a full disk) is undone, the log
        cut back to its complete rows, and raised as a :class:`~medprune.rundir.DiskFullError` naming the log, so
        the rerun after freeing space resumes from whole rows.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self._cut_partial_tail()
        line = (json.dumps(row, sort_keys=False, allow_nan=True) + "\n").encode("utf-8")
        with disk_full_is_user_error(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # never leave half a row behind a failed write
                raise
            finally:
                os.close(fd)


def columns_of(rows: Iterable[Row]) -> list[str]:
    """Union of the rows' columns: :data:`LEAD_COLUMNS`, then the others sorted, then :data:`TAIL_COLUMNS` (never the
    per-image :data:`BLOB_COLUMNS`)."""
    seen: set[str] = set()
    for row in rows:
        seen.update(row)
    seen -= set(BLOB_COLUMNS)
    lead = [c for c in LEAD_COLUMNS if c in seen]
    tail = [c for c in TAIL_COLUMNS if c in seen]
    middle = sorted(seen - set(lead) - set(tail))
    return lead + middle + tail


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(rows: Sequence[Row], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV atomically (temporary file + rename); missing cells are empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns) if columns is not None else columns_of(rows)
    with atomic_writer(path, newline="", durable=True, mode=0o644) as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def _parse(column: str, text: str) -> Any:
    if column in TEXT_COLUMNS:
        return text
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if column in INT_COLUMNS and number.is_integer() else number


def read_csv(path: str | Path) -> list[Row]:
    """Rows of a results CSV, with numbers parsed (text for :data:`TEXT_COLUMNS`, ``None`` for empty cells)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results table {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: _parse(k, v) for k, v in record.items()} for record in csv.DictReader(handle)]


def read_results(paths: Sequence[str | Path]) -> list[Row]:
    """Rows of several tables (CSV files, ``.jsonl`` logs or sweep folders), de-duplicated.

    A sweep folder is read from its ``rows.jsonl`` (with the per-image columns the confidence intervals need), or
    from its ``results.csv`` when it has no log.

    Raises:
        FileNotFoundError: a path holds no table.
        ValueError: no rows at all, or a table without the columns every sweep row has (:data:`REQUIRED_COLUMNS`,
            naming the missing ones).
    """
    merged: dict[tuple[str, ...], Row] = {}
    for item in paths:
        path = Path(item)
        if path.is_dir():
            path = path / "rows.jsonl" if (path / "rows.jsonl").is_file() else path / "results.csv"
        rows = RowLog(path).read() if path.suffix == ".jsonl" else read_csv(path)
        if path.suffix == ".jsonl" and not path.is_file():
            raise FileNotFoundError(f"no results table (results.csv or rows.jsonl) in {item}")
        missing = sorted({c for row in rows for c in REQUIRED_COLUMNS if c not in row})
        if missing:
            raise ValueError(
                f"results table {path} lacks the column(s) {', '.join(missing)}; medprune report reads the tables "
                "medprune sweep writes (a sweep folder, its results.csv or rows.jsonl)"
            )
        for row in rows:
            merged[row_key(row)] = with_recovery_defaults(row)
    if not merged:
        raise ValueError(f"the results table(s) {[str(p) for p in paths]} hold no rows")
    return list(merged.values())
