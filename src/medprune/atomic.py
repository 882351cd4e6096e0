"""Writing a file so that no reader ever sees half of it (a temporary file beside it, renamed into place), and a
full disk reported as a user error naming the file.

It sits below :mod:`medprune.config` and :mod:`medprune.rundir` (both write through it), so it imports neither.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


class DiskFullError(ValueError):
    """The disk (or the quota) filled up while medprune wrote a file; the message names the file (a user error:
    exit code 2)."""


@contextmanager
def atomic_writer(
    path: str | Path, *, newline: str | None = None, durable: bool = False, mode: int | None = None
) -> Iterator[TextIO]:
    """A text handle on a temporary file beside ``path`` that replaces ``path`` when the block ends without error.

    A reader never sees half a file; on error the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to write (its folder must exist).
        newline: passed to :func:`open` (``""`` for the :mod:`csv` module).
        durable: flush and ``fsync`` before the rename.
        mode: permission bits set on the file before the rename (default: those of :func:`tempfile.mkstemp`).
    """
    path = Path(path)
    with disk_full_is_user_error(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "w", newline=newline, encoding="utf-8") as handle:
                yield handle
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


#: errno values of a full disk or an exhausted quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Suffix of the temporary files medprune writes beside a file before renaming them into place.
TMP_SUFFIX = ".tmp"


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the quota) is full: an ``OSError`` with ENOSPC / EDQUOT, or a library
    error whose text carries that message (safetensors reports it as ``SafetensorError``)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextmanager
def disk_full_is_user_error(path: str | Path) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into a :class:`DiskFullError` naming ``path``.

    >>> with disk_full_is_user_error("out/x.json"):
    ...     pass
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise DiskFullError(
            f"no space left on the device (or quota exceeded) while writing {path}; free some space and run the same "
            "command again: it resumes"
        ) from error


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name (safetensors, numpy, matplotlib); it
    replaces ``path`` when the block ends without error, and is removed otherwise. A full disk is a
    :class:`DiskFullError` naming ``path``.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("x")
    >>> target.read_text()
    'x'
    """
    path = Path(path)
    with disk_full_is_user_error(path):
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_text_atomic(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write ``text`` through a temporary file and a rename (:func:`atomic_writer`); a full disk names ``path``."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write strict JSON through a temporary file and a rename, so a reader never sees half a file."""
    with atomic_writer(path) as handle:
        handle.write(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return Path(path)
