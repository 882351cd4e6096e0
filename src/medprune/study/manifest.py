"""The study's progress file, ``<out>/study.json``: one record per finished task, written atomically.

A task (``train/<checkpoint>`` or ``sweep/<variant>/<checkpoint>``) is done when its record is here *with the same
key* as the task now asks for; the record also keeps how long the task took, which feeds the grid's ETA after a
restart. The file is replaced through a temporary file and a rename, so a study killed at any moment leaves either
the old or the new file, never half of one.

>>> import tempfile
>>> manifest = StudyManifest(Path(tempfile.mkdtemp()) / "study.json")
>>> manifest.finish("train/a", key="k1", seconds=3.0, group="train/resnet_small")
>>> manifest.is_done("train/a", "k1"), manifest.is_done("train/a", "k2")
(True, False)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medprune.atomic import write_json_atomic
from medprune.rundir.files import utc_now

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "StudyManifest"]

FORMAT = "medprune-study/1"


class StudyManifest:
    """Finished tasks of a study, persisted in one JSON file.

    Args:
        path: the JSON file (``<out>/study.json``); read when it exists.

    Raises:
        ValueError: the file exists but is not a study manifest (the message names it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"format": FORMAT, "tasks": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{self.path} is not a readable study manifest ({error})") from None
            if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not a study manifest (format {FORMAT!r} expected)")
            self.data = loaded

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Task id -> its record (``key``, ``seconds``, ``group``, ``finished_at`` and task-specific fields)."""
        return self.data.setdefault("tasks", {})

    def is_done(self, task: str, key: str) -> bool:
        """Whether ``task`` finished with this ``key`` (a record under another key is a different config)."""
        record = self.tasks.get(task)
        return record is not None and record.get("key") == key

    def record(self, task: str) -> dict[str, Any] | None:
        """The record of ``task`` (``None`` when it never finished)."""
        return self.tasks.get(task)

    def finish(self, task: str, *, key: str, seconds: float, group: str, **extra: Any) -> None:
        """Record ``task`` as finished and save the file atomically."""
        self.tasks[task] = {
            "key": key,
            "seconds": round(float(seconds), 3),
            "group": group,
            "finished_at": utc_now(),
            **extra,
        }
        self.save()

    def set(self, name: str, value: Any) -> None:
        """Store a top-level entry (e.g. the scale of the study) and save."""
        self.data[name] = value
        self.save()

    def save(self) -> None:
        """Write the manifest atomically (temporary file + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)

    def durations(self) -> dict[str, list[float]]:
        """Seconds of the finished tasks by group (what the ETA learns from)."""
        groups: dict[str, list[float]] = {}
        for record in self.tasks.values():
            groups.setdefault(str(record.get("group")), []).append(float(record.get("seconds", 0.0)))
        return groups
