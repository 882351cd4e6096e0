"""Output folders: one writer at a time, a record of the config that made them, nothing overwritten silently.

Every command that writes a run folder enters :class:`RunDir` before any work, with the ``out`` and ``overwrite`` of
its config (:class:`OutputFolder`, the part every folder-writing config inherits):

- **Writable.** :func:`check_writable` creates the folder and proves a file can be written in it, or fails naming it.
- **Lock** (:mod:`~medprune.rundir.lock`). ``<folder>/.medprune.lock`` is taken with :mod:`filelock` (an OS lock the
  kernel releases when its holder dies); ``<folder>/.medprune.lock.json`` names the holder (pid, host, command, start
  time). A second writer gets :class:`FolderLockedError` naming the holder. A holder record left by a process that
  is gone is a stale lock: reported with a warning and taken over.
- **Config record** (:mod:`~medprune.rundir.record`). ``<folder>/run.json`` holds the resolved config, its SHA-256
  over the keys that decide the results, and a short history of the runs. The same config resumes; another config
  gets :class:`ConfigMismatchError` listing the differing keys ``old -> new``, unless ``overwrite=True``, which moves
  the old content into ``<folder>/.old-<UTC time>/`` (never deletes). The caller names the ``cosmetic`` keys (device,
  batch sizes, the folder's own path) that may change. A folder holding run outputs (:data:`RUN_OUTPUTS`) but no
  ``run.json`` is compared with its ``config.yaml`` (runs from before ``run.json``), or refused when it has none.
- **Corrupt artefacts** (:mod:`~medprune.rundir.files`). :func:`verify_or_quarantine` checks a cached file against
  its recorded SHA-256 and renames it ``<name>.corrupt-<UTC time>`` (with a warning) when it differs, so the caller
  recomputes it.

Every error is a ``ValueError`` subclass (:class:`RunDirError`): a user error, exit code 2, one line.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp()) / "run"
>>> with RunDir(folder, "train", {"epochs": 3, "device": "cpu"}, cosmetic=["device"]):
...     _ = (folder / "model.txt").write_text("weights")
>>> with RunDir(folder, "train", {"epochs": 3, "device": "cuda"}, cosmetic=["device"]) as run:
...     run.resumed
True
>>> try:
...     RunDir(folder, "train", {"epochs": 4, "device": "cpu"}, cosmetic=["device"]).__enter__()
... except ConfigMismatchError as error:
...     "epochs: 3 -> 4" in str(error)
True
"""

from __future__ import annotations

from medprune.atomic import (
    DiskFullError,
    atomic_path,
    atomic_writer,
    disk_full_is_user_error,
    is_disk_full,
    write_json_atomic,
    write_text_atomic,
)
from medprune.rundir.errors import ConfigMismatchError, FolderLockedError, RunDirError
from medprune.rundir.files import (
    HOLDER_FILE,
    LOCK_FILE,
    OLD_PREFIX,
    RECORD_FILE,
    RUN_OUTPUTS,
    check_writable,
    move_aside,
    quarantine,
    remove_leftover_tmp,
    run_outputs,
    structural_problem,
    verify_cached,
    verify_or_quarantine,
)
from medprune.rundir.lock import FolderLock, LockHolder
from medprune.rundir.output import OutputFolder, output_folder
from medprune.rundir.record import (
    ALWAYS_COSMETIC,
    ORDER_FREE_KEYS,
    PATH_KEYS,
    RunDir,
    canonical_leaf,
    config_diff,
    config_digest,
    non_finite_keys,
)

__all__ = [
    "ALWAYS_COSMETIC",
    "HOLDER_FILE",
    "ORDER_FREE_KEYS",
    "PATH_KEYS",
    "LOCK_FILE",
    "OLD_PREFIX",
    "RECORD_FILE",
    "RUN_OUTPUTS",
    "ConfigMismatchError",
    "DiskFullError",
    "FolderLock",
    "FolderLockedError",
    "LockHolder",
    "OutputFolder",
    "RunDir",
    "RunDirError",
    "atomic_path",
    "atomic_writer",
    "canonical_leaf",
    "check_writable",
    "config_diff",
    "config_digest",
    "disk_full_is_user_error",
    "is_disk_full",
    "move_aside",
    "non_finite_keys",
    "output_folder",
    "quarantine",
    "remove_leftover_tmp",
    "run_outputs",
    "structural_problem",
    "verify_cached",
    "verify_or_quarantine",
    "write_json_atomic",
    "write_text_atomic",
]
