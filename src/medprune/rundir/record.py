"""The folder's config record (``run.json``) and :class:`RunDir`, the context manager every writing command enters."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from medprune.atomic import write_json_atomic
from medprune.config import config_to_dict, flat_keys, flat_names, leaf_defaults, leaf_values
from medprune.rundir.errors import ConfigMismatchError, RunDirError
from medprune.rundir.files import (
    RECORD_FILE,
    check_writable,
    move_aside,
    remove_leftover_tmp,
    run_content,
    run_outputs,
    utc_now,
)
from medprune.rundir.lock import FolderLock, LockHolder

logger = logging.getLogger(__name__)

RECORD_FORMAT = "medprune-run/1"
#: Keys never compared: how a command was asked to behave, not what it computes.
ALWAYS_COSMETIC: tuple[str, ...] = ("overwrite", "verbose", "progress")
#: Leaves (by their last name) that hold file or folder paths: compared by the absolute path they resolve to, so
#: ``ck/model``, ``./ck/model``, ``/abs/ck/model`` and ``x/../ck/model`` are one run.
PATH_KEYS: frozenset[str] = frozenset(
    {"checkpoint", "checkpoints", "data_root", "weights", "scores", "score_cache", "results", "teacher"}
)
#: List leaves (by their last name) whose order does not change what a run computes: compared sorted.
ORDER_FREE_KEYS: frozenset[str] = frozenset(
    {
        "rates",
        "seeds",
        "selection_seeds",
        "methods",
        "controls",
        "samplings",
        "tolerances",
        "table1_rates",
        "similarity_rates",
        "checkpoints",
        "paired_metrics",
        "splits",
    }
)
#: Files a run writes first (its record and resolved config): removed again when the run fails before any output.
PRELUDE_FILES: tuple[str, ...] = (RECORD_FILE, "config.yaml")
_HISTORY = 20
_ABSENT = "(absent)"


def _resolved_path(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return str(Path(value).expanduser().resolve())
    return value


def canonical_leaf(key: str, value: Any) -> Any:
    """``value`` of leaf ``key`` in the form runs are compared in: paths (:data:`PATH_KEYS`) resolved to absolute
    paths, order-free lists (:data:`ORDER_FREE_KEYS`) sorted.

    >>> canonical_leaf("rates", [0.5, 0.1]), canonical_leaf("seed", 3)
    ([0.1, 0.5], 3)
    """
    name = key.rsplit(".", 1)[-1]
    if name in PATH_KEYS:
        value = [_resolved_path(v) for v in value] if isinstance(value, list) else _resolved_path(value)
    if name in ORDER_FREE_KEYS and isinstance(value, list):
        value = sorted(value, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def non_finite_keys(value: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN or infinite number in a nested config (``[]`` when all are finite).

    >>> non_finite_keys({"lr": float("nan"), "finetune": {"rates": [0.1, float("inf")]}})
    ['lr', 'finetune.rates[1]']
    """
    if isinstance(value, float) and not math.isfinite(value):
        return [prefix or "value"]
    if isinstance(value, Mapping):
        return [k for key, item in value.items() for k in non_finite_keys(item, f"{prefix}.{key}" if prefix else key)]
    if isinstance(value, (list, tuple)):
        return [k for i, item in enumerate(value) for k in non_finite_keys(item, f"{prefix}[{i}]")]
    return []


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass or mapping as a JSON-typed dict (paths and other objects as text)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = config_to_dict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")
    return json.loads(json.dumps(dict(config), default=str, sort_keys=True))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and (value or not prefix):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _decisive(config: Any, cosmetic: Iterable[str]) -> dict[str, Any]:
    skip = set(cosmetic) | set(ALWAYS_COSMETIC)
    flat = _flatten(config_dict(config))
    return {
        key: canonical_leaf(key, value)
        for key, value in flat.items()
        if not any(key == c or key.startswith(f"{c}.") for c in skip)
    }


def config_digest(config: Any, cosmetic: Iterable[str] = ()) -> str:
    """SHA-256 over the keys of ``config`` (dataclass or mapping) that decide the results (``cosmetic`` left out;
    paths resolved and order-free lists sorted: :func:`canonical_leaf`).

    >>> a, b = {"epochs": 3, "device": "cpu"}, {"epochs": 3, "device": "cuda"}
    >>> config_digest(a, ["device"]) == config_digest(b, ["device"]), config_digest(a) == config_digest(b)
    (True, False)
    """
    blob = json.dumps(_decisive(config, cosmetic), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def config_diff(
    old: Any,
    new: Any,
    cosmetic: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    config_class: type | None = None,
) -> list[str]:
    """``["key: old -> new", ...]`` over the decisive keys; nested keys dotted (``method_options.ig.steps``). Values
    are compared as :func:`canonical_leaf` makes them: a path by where it resolves, an order-free list sorted.

    ``defaults``: top-level keys added to a config after folders were made, with the value that reproduces the older
    results; a config without such a key reads as having that value.

    ``config_class``: the config dataclass both were made from (default: ``new``'s class when it is one). With it,
    both are compared leaf by leaf whatever their form (the nested one written now, or a flat one written before the
    config had parts: :func:`medprune.config.leaf_values`), ``cosmetic`` and ``defaults`` keys may be flat or dotted,
    and a part's leaf a record lacks reads as the config's default for it (a flat record predates the part, whose
    defaults are what those runs did).

    >>> config_diff({"rates": [0.1], "lr": 0.01}, {"rates": [0.1, 0.2], "lr": 0.01})
    ['rates: [0.1] -> [0.1, 0.2]']
    >>> config_diff({"lr": 0.01}, {"lr": 0.01, "epochs": [0]}, defaults={"epochs": [0]})
    []
    """
    cosmetic = tuple(cosmetic)
    if config_class is None and dataclasses.is_dataclass(new) and not isinstance(new, type):
        config_class = type(new)
    if config_class is not None:
        keys = flat_keys(config_class)
        cosmetic = tuple(keys.get(c, c) for c in cosmetic)
        added = {k: v for k, v in leaf_defaults(config_class).items() if "." in k}
        added.update(leaf_values(config_class, defaults or {}))
        old, new = ({**added, **leaf_values(config_class, config_dict(c))} for c in (old, new))
    elif defaults:
        old, new = ({**defaults, **config_dict(c)} for c in (old, new))
    before, after = _decisive(old, cosmetic), _decisive(new, cosmetic)
    names = flat_names(config_class) if config_class is not None else {}
    lines = []
    for key in sorted(set(before) | set(after)):
        a = json.dumps(before[key]) if key in before else _ABSENT
        b = json.dumps(after[key]) if key in after else _ABSENT
        if a != b:
            lines.append(f"{names.get(key, key)}: {a} -> {b}")  # by the key a user writes
    return lines


class RunDir:
    """Context manager: the only writer of ``path`` while inside, with the folder's config record checked.

    Args:
        path: the run folder (created if missing; must be writable).
        command: the command writing it (``train``, ``sweep``, ...), recorded and shown to a refused second writer.
        config: the resolved config (dataclass or JSON-able mapping).
        cosmetic: keys (top-level or dotted) that may differ between runs of one folder: device, batch sizes, the
            folder's own path. :data:`ALWAYS_COSMETIC` keys are never compared.
        overwrite: start afresh: the folder's current content is moved into ``path/.old-<UTC time>/``.
        legacy_config: the YAML config file runs wrote before ``run.json`` existed; a folder holding only that
            record is compared with it (same config resumes) instead of being refused.
        defaults: keys added to the config after folders were made, with the value that reproduces the older results
            (a record without such a key reads as having it; :func:`config_diff`).

    Attributes:
        resumed: the folder held a run of the same config (its files are reused).
        moved_to: where ``overwrite`` moved the old content (``None`` if nothing was moved).
        previous_holder: the holder of a stale lock that was taken over, else ``None``.

    A run that fails before writing any output (a refused input found inside the block) leaves the folder as it
    found it: the ``run.json`` and ``config.yaml`` it wrote into a new folder are removed again, so the corrected
    command is not refused as "another config". Temporary files (``.*.tmp``) a killed run left are removed on entry.

    Raises:
        RunDirError: the path is empty, the config holds a NaN or infinite number (named), the folder cannot be
            written, or its ``run.json`` is damaged (without ``overwrite``).
        FolderLockedError: another live process holds the folder.
        ConfigMismatchError: the folder was made by another command or config, or holds files without a record
            (without ``overwrite``).
    """

    def __init__(
        self,
        path: str | Path,
        command: str,
        config: Any,
        *,
        cosmetic: Iterable[str] = (),
        overwrite: bool = False,
        legacy_config: str | None = "config.yaml",
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        if not str(path).strip():
            raise RunDirError(f"the output folder of 'medprune {command}' is empty; pass --out FOLDER")
        self.path = Path(path).expanduser()
        self.command = command
        self.config = config_dict(config)
        bad = non_finite_keys(self.config)
        if bad:
            raise RunDirError(f"{', '.join(bad)} must be a finite number (got NaN or infinity)")
        self.config_class = type(config) if dataclasses.is_dataclass(config) and not isinstance(config, type) else None
        self.cosmetic = tuple(cosmetic)
        self.overwrite = bool(overwrite)
        self.legacy = legacy_config
        self.defaults = dict(defaults or {})
        self.resumed = False
        self.moved_to: Path | None = None
        self._lock = FolderLock(self.path, command)
        self._record: dict[str, Any] = {}
        self._fresh = False

    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def previous_holder(self) -> LockHolder | None:
        return self._lock.previous_holder

    def __enter__(self) -> RunDir:
        existed = self.path.exists()
        check_writable(self.path)
        self._lock.acquire()
        try:
            self._fresh = not existed or not run_content(self.path)
            remove_leftover_tmp(self.path)
            self._open_record()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self._record and exc_type is not None and self._fresh and self._nothing_written():
                for name in PRELUDE_FILES:  # refused before any output: leave the folder as it was found
                    (self.path / name).unlink(missing_ok=True)
                self._record = {}
                logger.debug("%s: the run failed before writing anything; its record was removed", self.path)
            if self._record:
                status = "finished" if exc_type is None else f"failed: {exc_type.__name__}"
                self._record["history"][-1].update(status=status, ended=utc_now())
                write_json_atomic(self.record_path, self._record)
        except OSError as error:  # never hide the body's own error behind this one
            logger.warning("could not update %s: %s", self.record_path, error)
        finally:
            self._lock.release()

    def _nothing_written(self) -> bool:
        """Whether the folder holds nothing but what :class:`RunDir` and the config record put there."""
        return all(p.name in PRELUDE_FILES for p in run_content(self.path))

    def _open_record(self) -> None:
        record = self._read_record()
        if self.overwrite:
            self.moved_to = move_aside(self.path)
            if self.moved_to is not None:
                logger.warning("%s: --overwrite moved the previous content to %s", self.path, self.moved_to)
            record = None
        elif record is not None:
            self._check_same(record)
            self.resumed = True
            logger.info(
                "%s: resuming (same %s config as the run created %s)",
                self.path,
                self.command,
                record.get("created", "?"),
            )
        elif run_outputs(self.path):
            legacy = self._read_legacy()
            if legacy is None:
                names = ", ".join(p.name for p in run_outputs(self.path)[:5])
                raise ConfigMismatchError(
                    f"output folder {self.path} already holds files ({names}) but no {RECORD_FILE} saying which "
                    "config made them; choose another folder or pass --overwrite to move them aside"
                )
            self._check_same({"command": self.command, "config": legacy})
            self.resumed = True
            logger.info("%s: resuming a folder from before %s (its %s matches)", self.path, RECORD_FILE, self.legacy)
        history = list((record or {}).get("history", []))[-(_HISTORY - 1) :]
        history.append({"started": utc_now(), "pid": os.getpid(), "host": socket.gethostname(), "status": "running"})
        self._record = {
            "format": RECORD_FORMAT,
            "command": self.command,
            "config": self.config,
            "config_sha256": config_digest(self.config, self.cosmetic),
            "cosmetic": sorted(set(self.cosmetic) | set(ALWAYS_COSMETIC)),
            "created": (record or {}).get("created", utc_now()),
            "history": history,
        }
        write_json_atomic(self.record_path, self._record)

    def _read_record(self) -> dict[str, Any] | None:
        if not self.record_path.is_file():
            return None
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
                raise ValueError("not a run record")
        except (ValueError, UnicodeDecodeError) as error:
            if self.overwrite:
                return None
            raise RunDirError(
                f"{self.record_path} is damaged ({type(error).__name__}); pass --overwrite to move the folder's "
                "content aside, or choose another folder"
            ) from None
        return record

    def _read_legacy(self) -> dict[str, Any] | None:
        path = self.path / self.legacy if self.legacy else None
        if path is None or not path.is_file():
            return None
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
        return config_dict(loaded) if isinstance(loaded, dict) else None

    def _check_same(self, record: Mapping[str, Any]) -> None:
        if record.get("command") != self.command:
            raise ConfigMismatchError(
                f"output folder {self.path} holds a 'medprune {record.get('command')}' run, not "
                f"'medprune {self.command}'; choose another folder or pass --overwrite to move its content aside"
            )
        recorded = record.get("cosmetic", [])
        cosmetic = set(self.cosmetic) | {str(c) for c in recorded if isinstance(c, str)}
        diff = config_diff(record["config"], self.config, cosmetic, self.defaults, self.config_class)
        if diff:
            raise ConfigMismatchError(
                f"output folder {self.path} was made by another config ({'; '.join(diff)}); use the same settings to "
                "resume, choose another folder, or pass --overwrite to move its content aside"
            )
