"""Ray executor on a real local cluster (2 CPUs, started once for the module): same results as in-process, a killed
worker's task retried, failures reported with their cause while other results are kept; a sweep on Ray writes the
local executor's table row for row, survives a killed worker, and a killed driver resumes with the same command.

Skipped, visibly, where Ray is not installed (``pip install 'medprune[ray]'``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'medprune[ray]'")

from medprune.executors import RayExecutor, Resources, Task, TaskFailedError, raise_failures  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    """One local Ray cluster for the module (workers import this test module, hence ``tests/`` on their path)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    try:
        executor = RayExecutor("local", max_retries=1, init_options={"num_cpus": 2, "log_to_driver": False})
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    yield executor
    executor.close()
    assert not ray.is_initialized()


def _die_once(marker: str, value: int) -> tuple[int, int]:
    """Kill this worker process the first time (marker absent), return ``(value, pid)`` the next time."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return value, os.getpid()


def _die_always() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _refuse(value: int) -> None:
    raise ValueError(f"value {value} is not allowed")


def _total(values: list[int], offset: int) -> int:
    return sum(values) + offset


def test_results_come_back_with_their_keys_and_put_is_resolved(executor: RayExecutor) -> None:
    shared = executor.put(list(range(1000)))
    tasks = [Task(f"t{i}", _total, (shared, i), resources=Resources(num_cpus=0.5)) for i in range(6)]
    values = {o.key: o.value for o in executor.run(tasks)}
    assert values == {f"t{i}": 499500 + i for i in range(6)}


def test_a_task_whose_worker_is_killed_is_retried_and_the_others_kept(executor: RayExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    tasks = [Task("dies once", _die_once, (str(marker), 7))] + [Task(f"ok{i}", pow, (i, 2)) for i in range(3)]
    outcomes = {o.key: o for o in executor.run(tasks)}
    assert marker.is_file(), "the first attempt must have killed its worker"
    assert outcomes["dies once"].ok and outcomes["dies once"].value[0] == 7
    assert outcomes["dies once"].attempts == 2
    assert outcomes["dies once"].value[1] != os.getpid()  # it ran in a worker, not in this process
    assert [outcomes[f"ok{i}"].value for i in range(3)] == [0, 1, 4]


def test_retries_are_bounded_then_the_cause_is_reported(executor: RayExecutor) -> None:
    tasks = [Task("always dies", _die_always), Task("refuses", _refuse, (3,)), Task("fine", pow, (3, 3))]
    outcomes = {o.key: o for o in executor.run(tasks)}
    dead = outcomes["always dies"]
    assert not dead.ok and dead.lost and dead.attempts == 2  # max_retries=1: two runs, then reported
    assert dead.cause.startswith("WorkerCrashedError")
    refused = outcomes["refuses"]
    assert refused.attempts == 1 and not refused.lost  # its own error is not retried
    assert isinstance(refused.error, ValueError) and refused.cause == "ValueError: value 3 is not allowed"
    assert outcomes["fine"].value == 27
    with pytest.raises(TaskFailedError, match=r"always dies \(2 attempts\): WorkerCrashedError"):
        raise_failures([dead, refused])
