"""One progress display for a whole study, with an ETA learnt from the tasks already finished.

Tasks carry a group such as ``train/vgg_small/breastmnist`` or ``sweep/paper/vgg_small/breastmnist``. The time left
is the sum, over unfinished tasks, of the mean duration of finished tasks of the most specific group prefix that has
any (``train/vgg_small/breastmnist``, else ``train/vgg_small``, else ``train``). Durations of earlier sittings come
from the manifest, so a restarted study shows an ETA at once. On a terminal a tqdm bar is shown; otherwise (logs, CI,
tests) one log line per finished task.

>>> progress = GridProgress([("t1", "train/a"), ("t2", "train/b")], done=set(), history={}, enabled=False)
>>> progress.finish("t1", 10.0)
>>> progress.eta()
(10.0, True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from tqdm import tqdm

from medprune.progress import show_bar

logger = logging.getLogger(__name__)

__all__ = ["GridProgress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s`` (``?`` for ``None``)."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class GridProgress:
    """Progress of the study's tasks with a grid-wide ETA.

    Args:
        tasks: ``(task id, group)`` of every task of the grid, in run order.
        done: ids already finished (by an earlier sitting).
        history: seconds of finished tasks by group (earlier sittings included).
        enabled: show a tqdm bar (``None``: only when stderr is a terminal; never under ``--quiet``).
    """

    def __init__(
        self,
        tasks: Sequence[tuple[str, str]],
        done: set[str],
        history: Mapping[str, Sequence[float]],
        enabled: bool | None = None,
    ) -> None:
        self.groups = dict(tasks)
        self.done = {t for t in done if t in self.groups}
        self.history: dict[str, list[float]] = {g: list(v) for g, v in history.items()}
        self.started = time.monotonic()
        show = show_bar(enabled)
        self.bar: tqdm | None = None
        if show:
            self.bar = tqdm(
                total=len(self.groups),
                initial=len(self.done),
                unit="task",
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} tasks [{elapsed}{postfix}]",
            )
            self._refresh("")

    def _estimate(self, group: str) -> float | None:
        parts = group.split("/")
        for end in range(len(parts), 0, -1):
            seen = self.history.get("/".join(parts[:end]))
            if seen:
                return sum(seen) / len(seen)
            prefix = "/".join(parts[:end]) + "/"
            pooled = [s for g, values in self.history.items() if g.startswith(prefix) for s in values]
            if pooled:
                return sum(pooled) / len(pooled)
        return None

    def eta(self) -> tuple[float | None, bool]:
        """Seconds left and whether every unfinished task had an estimate (``False``: a lower bound)."""
        left = [self._estimate(group) for task, group in self.groups.items() if task not in self.done]
        known = [s for s in left if s is not None]
        if left and not known:
            return None, False
        return float(sum(known)), len(known) == len(left)

    def _eta_text(self) -> str:
        seconds, complete = self.eta()
        if seconds is None:
            return "ETA ? (no finished task of this kind yet)"
        return f"ETA {'' if complete else '>= '}{format_duration(seconds)}"

    def _refresh(self, current: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(current[-48:], refresh=False)
            self.bar.set_postfix_str(self._eta_text())

    def start(self, task: str) -> None:
        """Show ``task`` as running."""
        self._refresh(task)

    def finish(self, task: str, seconds: float) -> None:
        """Record ``task`` as finished after ``seconds`` (it counts towards its group's mean from now on)."""
        if task in self.done:
            return
        self.done.add(task)
        self.history.setdefault(self.groups.get(task, ""), []).append(float(seconds))
        if self.bar is not None:
            self.bar.update(1)
            self._refresh(task)
        else:
            logger.info(
                "study: %d/%d tasks done (%s, %s); %s; %s elapsed",
                len(self.done),
                len(self.groups),
                task,
                format_duration(seconds),
                self._eta_text(),
                format_duration(time.monotonic() - self.started),
            )

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
