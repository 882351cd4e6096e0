"""Executors: run independent pieces of work in-process or on a Ray cluster and yield their outcomes as they finish.

A runner (sweep, study, score) cuts its work into :class:`Task` objects (a picklable callable, its arguments and
the :class:`Resources` one run needs), hands them to an executor and consumes the :class:`Outcome` objects in the order
they complete. Durability stays with the runner: it writes each finished result itself (e.g. appends rows to its
fsync'ed log), so what ends on disk does not depend on the executor.

- :class:`LocalExecutor` (default) runs each task in this process, one after another; ``put`` is the identity. It
  imports nothing beyond the standard library.
- :class:`RayExecutor` submits every task as a Ray task with the declared CPUs / GPU fraction; ``put`` stores a large
  read-only input (test tensors, model weights) in the object store once, and tasks that take the returned reference
  as a top-level argument receive the value (Ray resolves top-level references only, not references inside
  containers). A task whose worker dies (killed, out of memory, node lost) is resubmitted up to ``max_retries`` times,
  then reported with its cause; an exception raised by the task itself is reported at once (it would fail again).
  Ray is imported when the executor is made, never by ``import medprune``.

>>> with LocalExecutor() as executor:
...     [outcome.value for outcome in executor.run([Task("two cubed", pow, (2, 3))])]
[8]
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from medprune.config import ConfigError, limits_enabled, limits_scope, option

logger = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "EXECUTOR_FIELDS",
    "ExecutorSettings",
    "EXECUTOR_FLAGS",
    "Executor",
    "ExecutorName",
    "LocalExecutor",
    "Outcome",
    "RayExecutor",
    "Resources",
    "Task",
    "TaskFailedError",
    "check_executor",
    "check_executor_config",
    "executor_for",
    "make_executor",
    "raise_failures",
    "task_resources",
]

ExecutorName = Literal["local", "ray"]
#: The executors ``--executor`` accepts.
EXECUTORS: tuple[str, ...] = ("local", "ray")
#: ``--ray-address`` values besides ``host:port`` and ``ray://host:port``: ``auto`` joins the cluster running on this
#: machine (error when there is none), ``local`` always starts a new one; none (the default) joins ``$RAY_ADDRESS``
#: or the cluster started with ``ray start`` here, else starts a local one.
RAY_ADDRESS_WORDS: tuple[str, ...] = ("auto", "local")
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+$")
#: Default number of resubmissions of a task whose worker died.
DEFAULT_RETRIES = 2
#: The fields a runner's config holds to choose its executor (``sweep``, ``study``, ``score``). None of them changes a
#: result, so run folders and study keys leave them out (they are cosmetic).
EXECUTOR_FIELDS: tuple[str, ...] = ("executor", "ray_address", "task_cpus", "task_gpus", "task_retries")


@dataclass
class ExecutorSettings:
    """The :data:`EXECUTOR_FIELDS` of a runner's config, inherited by ``ScoreConfig``, ``SweepConfig`` and
    ``StudyConfig`` (each field with its help beside it, where ``-h`` reads it)."""

    executor: ExecutorName = option(
        "local",
        help=(
            "local (in this process) or ray (one Ray task per piece of work: a score pair, a "
            "sweep curve, a study training)"
        ),
    )
    ray_address: str | None = option(None, help="the Ray cluster (RayExecutor)")
    task_cpus: float = option(1.0, help="CPU cores one task holds")
    task_gpus: float = option(0.0, help="GPUs one task holds (a fraction shares a GPU)")
    task_retries: int = option(DEFAULT_RETRIES, help="resubmissions of a task whose worker died")


#: Their command-line flags.
EXECUTOR_FLAGS: dict[str, str] = {
    "--executor": "executor",
    "--ray-address": "ray_address",
    "--task-cpus": "task_cpus",
    "--task-gpus": "task_gpus",
    "--task-retries": "task_retries",
}


@dataclass(frozen=True)
class Resources:
    """What one run of a task holds on a worker (Ray schedules by it; the local executor ignores it).

    Attributes:
        num_cpus: CPU cores (fractions allowed); Ray also sets the task's ``OMP_NUM_THREADS`` from it.
        num_gpus: GPUs, a fraction to share one GPU between tasks (e.g. 0.25: four tasks per GPU).
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ConfigError("a task must hold some resource: num_cpus and num_gpus are both 0")


@dataclass(frozen=True)
class Task:
    """One independent piece of work: ``fn(*args, **kwargs)`` run once, anywhere.

    Attributes:
        key: names the task in logs and outcomes (unique within one ``run``).
        fn: a picklable callable (a module-level function: workers import it by name).
        args, kwargs: its arguments; a reference from :meth:`Executor.put` may be a top-level positional argument.
        resources: what one run holds.
    """

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)


@dataclass
class Outcome:
    """How a task ended: its ``value``, or its ``error`` (with ``cause``, one line) and whether its worker was
    ``lost`` (died rather than raised); ``attempts`` counts the runs, retries included."""

    key: str
    value: Any = None
    error: BaseException | None = None
    attempts: int = 1
    lost: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cause(self) -> str:
        if self.error is None:
            return ""
        text = str(self.error).strip().splitlines()
        return f"{type(self.error).__name__}: {text[0] if text else ''}".rstrip(": ")


class TaskFailedError(RuntimeError):
    """Tasks whose workers kept dying; ``failures`` holds their outcomes (the other tasks' results were kept)."""

    def __init__(self, failures: list[Outcome]) -> None:
        self.failures = failures
        listed = "; ".join(f"{o.key} ({o.attempts} attempts): {o.cause}" for o in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} task(s) failed: {listed}{more}")


class Executor(Protocol):
    """Runs tasks and yields an :class:`Outcome` per task as each finishes (order not guaranteed)."""

    name: str

    def put(self, value: Any) -> Any:
        """Share a large read-only input once; pass the result as a top-level task argument."""
        ...

    def run(self, tasks: Iterable[Task]) -> Generator[Outcome, None, None]:
        """Run every task; closing the iterator early cancels what has not finished."""
        ...

    def close(self) -> None:
        """Release what the executor started (a Ray cluster it started itself)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalExecutor:
    """Runs tasks in this process, in the order given; no retries (an in-process task has no worker to lose)."""

    name = "local"

    def put(self, value: Any) -> Any:
        return value

    def run(self, tasks: Iterable[Task]) -> Generator[Outcome, None, None]:
        for task in tasks:
            try:
                value = task.fn(*task.args, **task.kwargs)
            except Exception as error:  # reported to the runner, which keeps the other results
                logger.debug("task %s failed", task.key, exc_info=True)
                yield Outcome(task.key, error=error)
            else:
                yield Outcome(task.key, value=value)

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _invoke(fn: Callable[..., Any], kwargs: Mapping[str, Any], limits: bool, *args: Any) -> Any:
    """The one remote function every task runs through (top-level ``args`` so Ray resolves references in them), under
    the driver's limits switch (``--no-limits`` reaches the worker, whose own default is bounded)."""
    with limits_scope(limits):
        return fn(*args, **kwargs)


class RayExecutor:
    """Runs tasks as Ray tasks on a cluster (joined, or started on this machine).

    Args:
        address: ``None`` (join ``$RAY_ADDRESS`` or a cluster started with ``ray start`` here, else start one),
            ``"auto"`` (join the one running here), ``"local"`` (start a new one), ``"host:port"`` or
            ``"ray://host:port"`` (Ray Client). Ignored when Ray is already initialised in this process.
        max_retries: resubmissions of a task whose worker died, before it is reported as failed.
        init_options: extra ``ray.init`` keywords (e.g. ``num_cpus`` for a local cluster, ``runtime_env``).

    Raises:
        ConfigError: Ray is not installed, or the address is malformed.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        max_retries: int = DEFAULT_RETRIES,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_executor("ray", address)
        import ray  # optional extra: imported only when a Ray executor is made

        self._ray = ray
        self.max_retries = _check_retries(max_retries)
        self._owns = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING, **(init_options or {})}
            ray.init(address=address, **options)
            self._owns = True
        self._remote = ray.remote(max_retries=0)(_invoke)
        self._lost = (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.LocalRayletDiedError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.OwnerDiedError,
        )
        logger.info("ray: %s CPUs, %s GPUs in the cluster", *(_resources(ray.cluster_resources())))

    def put(self, value: Any) -> Any:
        return self._ray.put(value)

    def _submit(self, task: Task) -> Any:
        options = {"num_cpus": task.resources.num_cpus, "num_gpus": task.resources.num_gpus, "name": task.key}
        return self._remote.options(**options).remote(task.fn, dict(task.kwargs), limits_enabled(), *task.args)

    def run(self, tasks: Iterable[Task]) -> Generator[Outcome, None, None]:
        ray = self._ray
        pending: dict[Any, tuple[Task, int]] = {}
        for task in tasks:
            pending[self._submit(task)] = (task, 1)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task, attempt = pending.pop(ready[0])
                try:
                    value = ray.get(ready[0])
                except ray.exceptions.RayTaskError as error:  # the task raised: it would raise again
                    cause = error.cause if isinstance(error.cause, Exception) else error.as_instanceof_cause()
                    yield Outcome(task.key, error=cause, attempts=attempt)
                except self._lost as error:
                    outcome = Outcome(task.key, error=error, attempts=attempt, lost=True)
                    if attempt <= self.max_retries:
                        logger.warning(
                            "task %s lost its worker (%s); retry %d of %d",
                            task.key,
                            outcome.cause,
                            attempt,
                            self.max_retries,
                        )
                        pending[self._submit(task)] = (task, attempt + 1)
                    else:
                        yield outcome
                else:
                    yield Outcome(task.key, value=value, attempts=attempt)
        finally:
            for ref in pending:  # the runner stopped early (error, interrupt): do not leave work running
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or gone
                    logger.debug("could not cancel a task", exc_info=True)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resources(totals: Mapping[str, float]) -> tuple[float, float]:
    return totals.get("CPU", 0.0), totals.get("GPU", 0.0)


def _check_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_retries must be an int >= 0, got {value!r}")
    return value


def check_executor(name: str, address: str | None = None, max_retries: int = DEFAULT_RETRIES) -> None:
    """Refuse a bad executor choice before any work (no Ray import).

    Raises:
        ConfigError: unknown executor, malformed ``ray_address``, bad ``max_retries``, or ``ray`` without Ray
            installed (naming the extra to install).
    """
    if name not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    _check_retries(max_retries)
    if address is not None and address not in RAY_ADDRESS_WORDS and not _ADDRESS.match(str(address)):
        raise ConfigError(
            f"ray_address must be {', '.join(RAY_ADDRESS_WORDS)}, host:port or ray://host:port, got {address!r}"
        )
    if address is not None and name != "ray":
        raise ConfigError(f"ray_address={address!r} is given but executor is {name!r}; use executor ray")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("executor 'ray' needs Ray, which is not installed: pip install 'medprune[ray]'")


def check_executor_config(config: Any) -> None:
    """:func:`check_executor` and :func:`task_resources` on a config holding :data:`EXECUTOR_FIELDS`."""
    check_executor(config.executor, config.ray_address, config.task_retries)
    task_resources(config)


def task_resources(config: Any) -> Resources:
    """The :class:`Resources` of one task from a config's ``task_cpus`` / ``task_gpus``."""
    return Resources(config.task_cpus, config.task_gpus)


def executor_for(config: Any) -> Executor:
    """The executor a config (with :data:`EXECUTOR_FIELDS`) asks for."""
    return make_executor(config.executor, config.ray_address, max_retries=config.task_retries)


def make_executor(
    name: str,
    address: str | None = None,
    *,
    max_retries: int = DEFAULT_RETRIES,
    init_options: Mapping[str, Any] | None = None,
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); see :func:`check_executor` for what is refused."""
    check_executor(name, address, max_retries)
    if name == "ray":
        return RayExecutor(address, max_retries=max_retries, init_options=init_options)
    return LocalExecutor()


def raise_failures(failures: list[Outcome], what: str = "task") -> None:
    """Log every failed task with its cause, then raise: the first task's own exception when every failure was one
    (so a bad value still reads as a bad value), else :class:`TaskFailedError` listing the lost tasks.

    Call it after the other tasks' results were kept.
    """
    if not failures:
        return
    for outcome in failures:
        logger.error("%s %s failed after %d attempt(s): %s", what, outcome.key, outcome.attempts, outcome.cause)
    lost = [o for o in failures if o.lost]
    if lost:
        raise TaskFailedError(lost) from lost[0].error
    first = failures[0].error
    assert first is not None
    raise first
