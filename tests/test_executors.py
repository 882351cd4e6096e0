"""The executor protocol without Ray: local runs, failures kept apart from results, choices refused before work."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from medprune.config import ConfigError
from medprune.executors import (
    LocalExecutor,
    Outcome,
    Resources,
    Task,
    TaskFailedError,
    check_executor,
    make_executor,
    raise_failures,
)


def _fail(message: str) -> None:
    raise ValueError(message)


def test_local_runs_every_task_in_order_and_put_is_identity() -> None:
    payload = {"weights": [1, 2, 3]}
    with make_executor("local") as executor:
        shared = executor.put(payload)
        assert shared is payload
        outcomes = list(executor.run([Task(str(i), pow, (i, 2)) for i in range(5)] + [Task("len", len, (shared,))]))
    assert [o.key for o in outcomes] == ["0", "1", "2", "3", "4", "len"]
    assert [o.value for o in outcomes] == [0, 1, 4, 9, 16, 1]
    assert all(o.ok and o.attempts == 1 for o in outcomes)


def test_a_failing_task_is_reported_and_the_others_are_kept() -> None:
    tasks = [Task("a", pow, (2, 2)), Task("bad", _fail, ("rate 2 is out of range",)), Task("c", pow, (3, 2))]
    outcomes = {o.key: o for o in LocalExecutor().run(tasks)}
    assert outcomes["a"].value == 4 and outcomes["c"].value == 9
    assert not outcomes["bad"].ok and not outcomes["bad"].lost
    assert outcomes["bad"].cause == "ValueError: rate 2 is out of range"
    with pytest.raises(ValueError, match="rate 2 is out of range"):  # a task's own error keeps its type (exit 2)
        raise_failures([o for o in outcomes.values() if not o.ok])


def test_lost_workers_raise_task_failed_naming_each_task_and_cause() -> None:
    lost = [Outcome(f"c{i}", error=RuntimeError(f"worker {i} died\ntrace"), attempts=3, lost=True) for i in range(7)]
    expected = r"7 task\(s\) failed: c0 \(3 attempts\): RuntimeError: worker 0 died; .*; and 2 more$"
    with pytest.raises(TaskFailedError, match=expected):
        raise_failures([Outcome("own", error=ValueError("x")), *lost])
    raise_failures([])  # nothing failed: nothing raised


def test_kwargs_and_keys_reach_the_callable() -> None:
    (outcome,) = LocalExecutor().run([Task("fmt", "{a}-{b}".format, kwargs={"a": 1, "b": "x"})])
    assert outcome.value == "1-x"


@pytest.mark.parametrize(
    ("name", "address", "retries", "message"),
    [
        ("dask", None, 2, "executor must be one of local, ray, got 'dask'"),
        ("ray", "not an address", 2, "ray_address must be auto, local, host:port or ray://host:port"),
        ("local", "auto", 2, "ray_address='auto' is given but executor is 'local'"),
        ("local", None, -1, "max_retries must be an int >= 0, got -1"),
    ],
)
def test_bad_choices_are_refused_naming_the_key(name: str, address: str | None, retries: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_executor(name, address, retries)


@pytest.mark.parametrize("address", [None, "auto", "local", "10.0.0.5:6379", "ray://head.cluster:10001"])
def test_addresses_ray_accepts_pass(address: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # as if Ray were installed
    check_executor("ray", address)


def test_ray_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'medprune\[ray\]'"):
        make_executor("ray")


@pytest.mark.parametrize(
    ("cpus", "gpus", "message"),
    [(-1, 0, "num_cpus must be a number >= 0"), (1, True, "num_gpus must be"), (0, 0, "both 0")],
)
def test_resources_are_validated(cpus: float, gpus: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Resources(cpus, gpus)
    assert Resources(0.5, 0.25).num_gpus == 0.25


def test_the_default_path_imports_no_ray() -> None:
    code = "import sys, medprune.executors; medprune.executors.LocalExecutor(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
