"""One writer per folder: an OS file lock (:mod:`filelock`) plus a JSON record naming its holder.

The kernel releases the lock when its holder dies, so a killed run never blocks the next one; the holder record it
leaves behind is reported as a stale lock and replaced. On file systems without OS locks a marker file is used
instead; a marker whose holder (same host) is no longer running is taken over with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, SoftFileLock, Timeout

from medprune.atomic import write_json_atomic
from medprune.rundir.errors import FolderLockedError
from medprune.rundir.files import HOLDER_FILE, LOCK_FILE, utc_now

logger = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a folder's lock."""

    pid: int
    host: str
    command: str
    since: str
    argv: tuple[str, ...] = ()

    @classmethod
    def current(cls, command: str) -> LockHolder:
        """This process, running ``command``."""
        return cls(os.getpid(), socket.gethostname(), command, utc_now(), tuple(sys.argv))

    @classmethod
    def read(cls, path: str | Path) -> LockHolder | None:
        """The holder recorded in ``path`` (``None`` when absent or unreadable: a holder mid-write)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            argv = tuple(str(a) for a in data.get("argv", ()))
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["since"]), argv)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def is_stale(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        """``pid 123 on host h (medprune sweep, since 2026-...)``."""
        return f"pid {self.pid} on host {self.host} (medprune {self.command}, since {self.since})"


def flock_works(path: Path) -> bool:
    """Whether the file system under ``path`` supports OS file locks (else a marker-file lock is used)."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock uses msvcrt locks
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return True  # FileLock reports it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        return True  # held by someone: locks work
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class FolderLock:
    """The exclusive lock of one folder (``<folder>/.medprune.lock`` + ``.medprune.lock.json``).

    Args:
        folder: an existing folder.
        command: what the holder runs, shown to refused writers.
        soft: force a marker-file lock (default: only where the file system has no OS locks).

    Attributes:
        previous_holder: the holder of a stale lock that :meth:`acquire` took over, else ``None``.
    """

    def __init__(self, folder: str | Path, command: str, *, soft: bool | None = None) -> None:
        self.folder = Path(folder)
        self.command = command
        self.lock_path = self.folder / LOCK_FILE
        self.holder_path = self.folder / HOLDER_FILE
        self._soft = soft
        self._lock: FileLock | SoftFileLock | None = None
        self.previous_holder: LockHolder | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            FolderLockedError: a live process holds it; the message names it (pid, host, command, since).
        """
        soft = self._soft if self._soft is not None else not flock_works(self.lock_path)
        lock: FileLock | SoftFileLock
        for attempt in range(2):
            lock = (SoftFileLock if soft else FileLock)(str(self.lock_path), timeout=0)
            try:
                lock.acquire()
                break
            except Timeout:
                holder = self._wait_for_holder()
                if soft and attempt == 0 and holder is not None and holder.is_stale():
                    logger.warning(
                        "%s: taking over a stale lock left by %s, which is no longer running",
                        self.folder,
                        holder.describe(),
                    )
                    self.previous_holder = holder
                    self.lock_path.unlink(missing_ok=True)
                    self.holder_path.unlink(missing_ok=True)
                    continue
                raise FolderLockedError(self._locked_message(holder)) from None
        self._lock = lock
        left = LockHolder.read(self.holder_path)
        if left is not None and left.pid != os.getpid():
            why = "no longer running" if left.is_stale() else "its lock had been released"
            logger.warning("%s: stale lock record of %s (%s); taking it over", self.folder, left.describe(), why)
            self.previous_holder = left
        write_json_atomic(self.holder_path, dataclasses.asdict(LockHolder.current(self.command)))

    def release(self) -> None:
        """Remove the holder record (if it is ours) and release the lock; a no-op when not held."""
        if self._lock is None:
            return
        try:
            holder = LockHolder.read(self.holder_path)
            if holder is not None and holder.pid == os.getpid():
                self.holder_path.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def _wait_for_holder(self) -> LockHolder | None:
        for _ in range(20):  # the holder writes its record just after taking the lock
            holder = LockHolder.read(self.holder_path)
            if holder is not None:
                return holder
            time.sleep(0.05)
        return None

    def _locked_message(self, holder: LockHolder | None) -> str:
        if holder is None:
            return f"output folder {self.folder} is locked by another process (no holder recorded in {HOLDER_FILE})"
        if holder.is_stale():
            return (
                f"output folder {self.folder} is locked: {holder.describe()} is no longer running but a process "
                f"it started still holds {self.lock_path}; stop that process or choose another folder"
            )
        return (
            f"output folder {self.folder} is being written by {holder.describe()}; wait for it to finish or "
            "choose another folder"
        )
