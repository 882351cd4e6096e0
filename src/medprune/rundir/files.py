"""File-level safety: writable folders, atomic JSON, moving old content aside, quarantining corrupt artefacts."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from medprune.atomic import TMP_SUFFIX
from medprune.provenance import file_sha256
from medprune.rundir.errors import RunDirError

logger = logging.getLogger(__name__)

LOCK_FILE = ".medprune.lock"
HOLDER_FILE = ".medprune.lock.json"
RECORD_FILE = "run.json"
#: Prefix of the folders old content is moved into (``.old-<UTC time>``), inside the run folder.
OLD_PREFIX = ".old-"
#: Prefix of the names corrupt artefacts are renamed to (``<name>.corrupt-<UTC time>``), beside the original.
CORRUPT_TAG = ".corrupt-"
KEPT_NAMES = frozenset({LOCK_FILE, HOLDER_FILE})
#: Names (glob patterns) of the files medprune commands write; a folder holding one of them without a ``run.json``
#: was made by some run (refused unless ``--overwrite``). Other files (a user's notes, the ``--config`` file) are not
#: outputs and never make a folder "taken".
RUN_OUTPUTS: tuple[str, ...] = (
    "config.yaml",
    "*_config.yaml",
    "*.safetensors",
    "model.json",
    "masked.json",
    "rows.jsonl",
    "results.csv",
    "manifest.json",
    "metrics.json",
    "history.csv",
    "scores.json",
    "summary.json",
    "done.json",
    "report.html",
)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    """The current UTC time for file names: ``20260126T101500Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def check_writable(path: str | Path) -> Path:
    """Create the folder ``path`` if needed and prove a file can be written in it; fail early naming it.

    Returns:
        The folder.

    Raises:
        RunDirError: ``path`` is a file, sits under a file, or cannot be created or written (read-only, no
            permission, disk full).
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"output folder {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".medprune-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RunDirError(f"output folder {folder} cannot be written: {reason}; choose another path") from None
    return folder


def remove_leftover_tmp(folder: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) a killed writer left in ``folder`` and its subfolders (not in
    ``.old-*`` folders); call it only while holding the folder's lock. Returns the removed paths."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.rglob(f".*{TMP_SUFFIX}")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(OLD_PREFIX) for part in relative[:-1]) or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        logger.warning("%s: removed %d temporary file(s) left by an interrupted run", folder, len(removed))
    return removed


def run_content(folder: str | Path) -> list[Path]:
    """Entries of ``folder`` that belong to its run: not the lock files, not earlier ``.old-*`` folders."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name not in KEPT_NAMES and not p.name.startswith(OLD_PREFIX))


def run_outputs(folder: str | Path, patterns: Iterable[str] = RUN_OUTPUTS) -> list[Path]:
    """Entries of ``folder`` (not in subfolders) whose names match ``patterns``: what an earlier run wrote there."""
    patterns = tuple(patterns)
    return [p for p in run_content(folder) if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in patterns)]


def move_aside(folder: str | Path) -> Path | None:
    """Move the run content of ``folder`` (see :func:`run_content`) into ``folder/.old-<UTC time>/``; never deletes.

    Returns:
        The new ``.old-*`` folder, or ``None`` when there was nothing to move.
    """
    folder = Path(folder)
    entries = run_content(folder)
    if not entries:
        return None
    target, suffix = folder / f"{OLD_PREFIX}{utc_stamp()}", 1
    while target.exists():
        target, suffix = folder / f"{OLD_PREFIX}{utc_stamp()}-{suffix}", suffix + 1
    target.mkdir()
    for entry in entries:
        shutil.move(str(entry), str(target / entry.name))
    return target


def quarantine(path: str | Path, reason: str) -> Path:
    """Rename ``path`` to ``<path>.corrupt-<UTC time>`` beside it, with a warning naming both and the reason."""
    path = Path(path)
    target, suffix = path.with_name(f"{path.name}{CORRUPT_TAG}{utc_stamp()}"), 1
    while target.exists():
        target, suffix = path.with_name(f"{path.name}{CORRUPT_TAG}{utc_stamp()}-{suffix}"), suffix + 1
    os.replace(path, target)
    logger.warning("%s set aside as %s (%s); it will be recomputed", path, target.name, reason)
    return target


def verify_or_quarantine(
    path: str | Path, expected_sha256: str | None, *, companions: Iterable[str | Path] = ()
) -> bool:
    """Check a cached artefact against its recorded SHA-256; move it (and ``companions``) aside when it differs.

    Args:
        path: the artefact (a score file, a checkpoint's weights).
        expected_sha256: the digest recorded when it was written; ``None`` (a record from before digests were kept)
            only checks that the file is non-empty and, for ``.safetensors``, that its header and data are complete.
        companions: files that belong with it (its JSON sidecar), moved aside with it.

    Returns:
        ``True`` when the file is intact (use it); ``False`` when it was missing or moved aside (recompute it).
    """
    path = Path(path)
    if not path.is_file():
        return False
    problem = None
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            problem = f"damaged: SHA-256 {actual[:12]}… differs from the recorded {expected_sha256[:12]}…"
    else:
        problem = structural_problem(path)
    if problem is None:
        return True
    quarantine(path, problem)
    for companion in companions:
        if Path(companion).is_file():
            quarantine(companion, f"it belongs with the damaged {path.name}")
    return False


def verify_cached(path: str | Path, sidecar: str | Path, key: str = "file_sha256") -> bool:
    """:func:`verify_or_quarantine` for an artefact whose JSON ``sidecar`` records its digest under ``key``.

    Returns:
        ``True`` when both files are there and intact; ``False`` when one is missing or either was damaged (both
        are then moved aside with a warning; recompute them).
    """
    path, sidecar = Path(path), Path(sidecar)
    if not path.is_file() or not sidecar.is_file():
        return False
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8")).get(key)
    except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
        quarantine(sidecar, "unreadable JSON sidecar")
        quarantine(path, f"its sidecar {sidecar.name} is unreadable")
        return False
    return verify_or_quarantine(path, recorded if isinstance(recorded, str) else None, companions=[sidecar])


def structural_problem(path: str | Path) -> str | None:
    """Why ``path`` is obviously broken (empty, or a ``.safetensors`` with a bad header or missing bytes), or None."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    if path.suffix != ".safetensors":
        return None
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "truncated header"
        length = int.from_bytes(head, "little")
        if length <= 0 or 8 + length > size:
            return "truncated header"
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            return "unreadable header"
    if not isinstance(header, dict):
        return "unreadable header"
    ends = [entry.get("data_offsets", [0, 0])[1] for key, entry in header.items() if key != "__metadata__"]
    if any(not isinstance(end, int) for end in ends):
        return "unreadable header"
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return f"truncated: {size} bytes of {needed}"
    return None
