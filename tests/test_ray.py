"""Ray executor on a real local cluster (2 CPUs, started once for the module): same results as in-process, a killed
worker's task retried, failures reported with their cause while other results are kept; a sweep on Ray writes the
local executor's table row for row, survives a killed worker, and a killed driver resumes with the same command.

Skipped, visibly, where Ray is not installed (``pip install 'medprune[ray]'``).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'medprune[ray]'")

from medprune.checkpoint import save_checkpoint  # noqa: E402
from medprune.config import build_config, config_to_dict, limits_enabled, limits_scope  # noqa: E402
from medprune.executors import LocalExecutor, RayExecutor, Resources, Task, TaskFailedError, raise_failures  # noqa: E402
from medprune.models import create_model  # noqa: E402
from medprune.runs.score import ScoreConfig, run_score  # noqa: E402
from medprune.runs.study import StudyConfig, run_study  # noqa: E402
from medprune.runs.sweep import SweepConfig, run_sweep  # noqa: E402
from medprune.scoring.request import ScoreRecipe  # noqa: E402
from medprune.scoring.store import load_scores  # noqa: E402
from medprune.sweep.table import RowLog, row_key  # noqa: E402

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


def test_no_limits_on_the_driver_reaches_the_workers(executor: RayExecutor) -> None:
    with limits_scope(False):
        lifted = [o.value for o in executor.run([Task("lifted", limits_enabled, ())])]
    bounded = [o.value for o in executor.run([Task("bounded", limits_enabled, ())])]
    assert lifted == [False] and bounded == [True]


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


# --- sweeps ----------------------------------------------------------------------------------------------------------

#: Columns that say when and how fast a row was computed, not what it measured.
TIMING = ("seconds", "finished_at")
#: baseline + 3 curves (lrp/random, random/none, magnitude/none) x 2 seeds x 2 rates, each on val and test.
EXPECTED_ROWS = 2 * (1 + 3 * 2 * 2)


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[SweepConfig]:
    """A small real sweep: untrained ResNet on PneumoniaMNIST, LRP + controls, 2 selection seeds, rates 0 and 0.3."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker (OMP_NUM_THREADS = its CPUs): the same arithmetic
    root = tmp_path_factory.mktemp("ray_sweep")
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    checkpoint = save_checkpoint(root / "train" / "model", model, meta)
    yield SweepConfig(
        checkpoints=[str(checkpoint)],
        out=str(root / "local"),
        data_root=str(data_root),
        methods=["lrp"],
        samplings=["random"],
        rates=[0.0, 0.3],
        scoring=ScoreRecipe(n_per_class=2),
        seeds=[0, 1],
    )
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_table(sweep_config: SweepConfig) -> list[dict[str, str]]:
    run_sweep(sweep_config, executor=LocalExecutor())
    return _table(Path(sweep_config.out))


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def _exactly_once(out: Path) -> list[dict]:
    """The log's rows, checked to hold every expected row exactly once (no line written twice)."""
    lines = [line for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    rows = RowLog(out / "rows.jsonl").read()
    assert len(lines) == len(rows) == len({row_key(r) for r in rows}) == EXPECTED_ROWS
    return rows


def test_sweep_on_ray_writes_the_local_table_row_for_row(
    executor: RayExecutor, sweep_config: SweepConfig, local_table: list[dict[str, str]], tmp_path: Path
) -> None:
    config = SweepConfig(**{**vars(sweep_config), "out": str(tmp_path / "ray"), "executor": "ray"})
    result = run_sweep(config, executor=executor)
    assert len(result.rows) == EXPECTED_ROWS
    assert _table(tmp_path / "ray") == local_table  # same rows, same order, same metric values (as text)
    _exactly_once(tmp_path / "ray")
    local = {row_key(r): r["predictions"] for r in RowLog(Path(sweep_config.out) / "rows.jsonl").read()}
    assert {row_key(r): r["predictions"] for r in result.rows} == local  # the same per-image predictions too


def _raylet_children() -> list[int]:
    """Worker processes of this module's cluster running a sweep curve (Ray titles them ``ray::<task name>``)."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == raylet and title.startswith("ray::resnet_small/"):  # a worker running a curve (not an agent)
            found.append(int(entry.name))
    return found


def test_a_worker_killed_mid_sweep_still_gives_every_row_once(
    executor: RayExecutor,
    sweep_config: SweepConfig,
    local_table: list[dict[str, str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_busy_worker() -> None:
        while not stop.is_set() and not killed:
            busy = _raylet_children()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    config = SweepConfig(**{**vars(sweep_config), "out": str(tmp_path / "ray"), "executor": "ray"})
    try:
        run_sweep(config, executor=executor)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no busy worker was found to kill"
    assert "lost its worker" in caplog.text  # the curve was resubmitted
    _exactly_once(tmp_path / "ray")
    assert _table(tmp_path / "ray") == local_table


def _driver(config_file: Path, address: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "medprune.cli.main", "sweep", "--config", str(config_file)]
    command += ["--executor", "ray", "--ray-address", address]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_driver_resumes_with_the_same_command(
    executor: RayExecutor, sweep_config: SweepConfig, local_table: list[dict[str, str]], tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump({**config_to_dict(sweep_config), "out": str(out)}))
    address = ray.get_runtime_context().gcs_address
    log = out / "rows.jsonl"
    first = _driver(config_file, address)
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None and (not log.is_file() or log.read_text().count("\n") < 4):
        time.sleep(0.02)  # baselines (2 rows) and at least one finished curve
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = RowLog(log).read()
    assert 4 <= len(before) < EXPECTED_ROWS, f"the driver must be killed mid-sweep ({len(before)} rows)"
    second = _driver(config_file, address)
    _, errors = second.communicate(timeout=300)
    assert second.returncode == 0, errors.decode()[-2000:]
    after = {row_key(r): r for r in _exactly_once(out)}
    assert all(after[row_key(r)]["finished_at"] == r["finished_at"] for r in before)  # kept, not recomputed
    assert _table(out) == local_table


def test_score_on_ray_writes_the_local_score_files(
    executor: RayExecutor, sweep_config: SweepConfig, tmp_path: Path
) -> None:
    files = {}
    for name in ("local", "ray"):  # ray: run_score joins the module's cluster (Ray is initialised in this process)
        config = ScoreConfig(
            checkpoint=sweep_config.checkpoints[0],
            out=str(tmp_path / name),
            data_root=sweep_config.data_root,
            methods=["lrp", "random"],
            samplings=["random", "confidence"],
            scoring=ScoreRecipe(n_per_class=2),
            device="cpu",
            executor=name,
        )
        pairs = run_score(config).pairs
        assert [(p.method, p.sampling) for p in pairs] == [(m, s) for m in ("lrp", "random") for s in config.samplings]
        assert [p.reused for p in pairs if p.method == "random"] == [False, True]  # one file for a data-free method
        files[name] = {p.file: load_scores(tmp_path / name / p.file).scores for p in pairs}
    assert files["ray"].keys() == files["local"].keys()
    for file, scores in files["ray"].items():
        assert all(torch.equal(scores[k], files["local"][file][k]) for k in scores), file
    assert ray.is_initialized()  # run_score did not shut down a cluster it did not start


@pytest.mark.slow
def test_study_on_ray_gives_the_local_table(executor: RayExecutor, data_root: Path, tmp_path: Path) -> None:
    """Two checkpoints trained as Ray tasks, their curves swept on Ray: the local study's table (opt-in: -m slow)."""
    tiny = {
        "architectures": ["resnet_small"],
        "datasets": ["pneumoniamnist"],
        "seeds": [0, 1],
        "threads": 1,
        "progress": False,
        "data_root": str(data_root),
        "train": {"image_size": 28, "epochs": 1, "max_train_samples": 64, "max_eval_samples": 32},
        "sweep": {"methods": ["lrp"], "samplings": ["random"], "controls": ["random"], "rates": [0.0, 0.3]},
        "claims": {"n_resamples": 100},
    }
    tables = []
    for name in ("local", "ray"):
        config = build_config(StudyConfig, overrides={**tiny, "out": str(tmp_path / name), "executor": name})
        result = run_study(config)
        assert len(result.trained) == 2
        tables.append(_table(result.out))
    assert tables[0] == tables[1] and len(tables[0]) > 0
