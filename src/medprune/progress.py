"""Progress of every long job (scoring, sweeps, reports, training, ...) with an ETA, one switch to silence it.

On a terminal (stderr is a TTY) a tqdm bar with rate and ETA is drawn on stderr. In logs and CI (stderr is not a
TTY) there is no bar: a line ``<desc>: 12/40 rates (30%), 1.2 rates/s, 10s elapsed, ETA 23s`` is logged at INFO at
most every :data:`LOG_INTERVAL_S` seconds instead (short jobs log nothing). Quiet mode (``medprune --quiet``,
:func:`set_quiet` or the environment variable ``MEDPRUNE_QUIET=1``) silences both.

>>> total = 0
>>> for item in progress(range(3), "demo", "item", enabled=False):
...     total += item
>>> total
3
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Generic, TypeVar

from tqdm import tqdm

__all__ = [
    "LOG_DATE_FORMAT",
    "LOG_FORMAT",
    "LOG_INTERVAL_S",
    "QUIET_ENV",
    "Progress",
    "is_quiet",
    "progress",
    "quiet",
    "set_quiet",
    "show_bar",
    "visible_logs",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Environment variable that silences progress when set to ``1`` / ``true`` / ``yes``.
QUIET_ENV = "MEDPRUNE_QUIET"

#: How medprune's log lines look (the CLI and :func:`visible_logs`).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"

#: Without a terminal: at most one progress log line per this many seconds.
LOG_INTERVAL_S = 30.0

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or allow (``False``) every progress bar and progress log line of this process."""
    _state["quiet"] = bool(quiet)


@contextmanager
def quiet(flag: bool = True) -> Iterator[None]:
    """Progress silenced (``flag``) or allowed inside the block; the previous setting is restored after it."""
    previous = _state["quiet"]
    _state["quiet"] = bool(flag)
    try:
        yield
    finally:
        _state["quiet"] = previous


def is_quiet() -> bool:
    """Whether progress is silenced (:func:`set_quiet` or ``MEDPRUNE_QUIET``)."""
    return _state["quiet"] or os.environ.get(QUIET_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def show_bar(enabled: bool | None = None) -> bool:
    """Whether to draw a bar: never when quiet; ``enabled=None``: only when stderr is a terminal."""
    if is_quiet() or enabled is False:
        return False
    if enabled is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return True


class Progress(Generic[T]):
    """A progress display over an iterable and/or a known amount of work (see the module docstring).

    Args:
        iterable: items to iterate over (``None``: call :meth:`update` yourself).
        total: amount of work (default: ``len(iterable)`` when it has one).
        desc: what is running, e.g. ``sweep``.
        unit: what one step is, e.g. ``rate``.
        enabled: ``None``: a bar on a terminal, log lines otherwise; ``True``: a bar even without a terminal;
            ``False``: nothing at all. Quiet mode always wins.
        leave: keep the finished bar on screen (``False`` for inner loops).
        log_interval_s: the least time between two log lines (no terminal).
    """

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        *,
        enabled: bool | None = None,
        leave: bool = True,
        log_interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.log_interval_s = log_interval_s
        self.started = self._last_log = time.monotonic()
        self._logged = False
        self.postfix = ""
        self.bar: tqdm | None = None
        self.log_lines = enabled is None and not is_quiet() and not show_bar(enabled)
        if show_bar(enabled):
            self.bar = tqdm(total=total, desc=desc or None, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this Progress has no iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log_lines and time.monotonic() - self._last_log >= self.log_interval_s:
            self._log()

    def skip(self, n: int) -> None:
        """``n`` steps were done before (e.g. by an earlier, interrupted run): drop them from the total so the rate
        and the ETA describe the work left."""
        if n <= 0 or self.total is None:
            return
        self.total = max(self.total - n, self.n)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def set_postfix(self, text: str) -> None:
        """Extra text after the bar (e.g. the current loss); shown in log lines too."""
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def eta_s(self) -> float | None:
        """Seconds left at the mean rate so far (``None`` without a total or before the first step)."""
        elapsed = time.monotonic() - self.started
        if self.total is None or self.n <= 0:
            return None
        return max(self.total - self.n, 0) * elapsed / self.n

    def _log(self, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        self._last_log, self._logged = now, True
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / elapsed:.3g} {self.unit}/s" if elapsed > 0 else ""
        eta = self.eta_s()
        tail = "done" if final else f"ETA {tqdm.format_interval(eta)}" if eta is not None else "ETA ?"
        extra = f" [{self.postfix}]" if self.postfix else ""
        logger.info(
            "%s: %s %s%s%s, %s elapsed, %s%s",
            self.desc or "progress",
            done,
            self.unit,
            share,
            rate,
            tqdm.format_interval(elapsed),
            tail,
            extra,
        )

    def close(self) -> None:
        """Finish the display (idempotent); without a terminal, a last line when progress lines were logged."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self._logged:
            self._log(final=True)
            self._logged = False


def progress(
    iterable: Iterable[T] | int | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    total: int | None = None,
    enabled: bool | None = None,
    leave: bool = True,
    log_interval_s: float = LOG_INTERVAL_S,
) -> Progress[T]:
    """A :class:`Progress` over ``iterable``, or over ``total`` steps when an ``int`` is given instead.

    >>> with progress(4, "work", "step", enabled=False) as bar:
    ...     bar.update(4)
    >>> bar.n
    4
    """
    if isinstance(iterable, int):
        iterable, total = None, iterable
    return Progress(iterable, total, desc, unit, enabled=enabled, leave=leave, log_interval_s=log_interval_s)


@contextmanager
def visible_logs() -> Iterator[None]:
    """medprune's INFO log lines (one per stage and per candidate, progress lines) shown on stderr inside the block
    when nothing in the program has configured logging, as the CLI shows them: a Python caller of a long job sees
    where it is. A program that configured logging (a handler on the root or the medprune logger) is left alone, and
    so is quiet mode.

    >>> with visible_logs():
    ...     pass
    """
    package = logging.getLogger("medprune")
    if logging.getLogger().handlers or package.handlers or is_quiet():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    level, propagate = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        package.propagate = propagate
