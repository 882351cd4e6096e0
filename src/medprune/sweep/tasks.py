"""A sweep cut into independent tasks: one per (sign, selection seed, method, sampling) curve of one model.

A task scores its curve once (through the score files in the shared ``scores/`` folder: a file another task or an
earlier run already wrote is reused, a new one is written atomically) and evaluates every setting sharing that sign
at every rate on every split, exactly as :func:`~medprune.sweep.core.sweep_model` does in one process. It returns
its new rows instead of writing them: the driver appends them to its own fsync'ed ``rows.jsonl``, so the table does
not depend on where the task ran. The baselines are evaluated by the driver first and handed to every task (the rate-0
rows copy them), together with the task's rows already in the log (they are not recomputed).

The large read-only inputs (the model, its training split, the evaluation tensors, the recalibration images) are the
top-level arguments of :func:`run_curve`, so an executor can share them once (``executor.put``) instead of once per
task; the small :class:`CurveJob` says what to compute.

>>> # executor.run([Task(job.key, run_curve, (model_ref, train_ref, eval_ref, recal_ref, job)) for job in jobs])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from medprune.executors import Executor, LocalExecutor, Outcome, Resources, Task
from medprune.options import NO_SAMPLING
from medprune.progress import progress
from medprune.pruning.cost import CostCounter
from medprune.scoring.request import ScoreRecipe
from medprune.scoring.store import ScoreStore
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.table import BASELINE, Row, RowLog, row_key

logger = logging.getLogger(__name__)

__all__ = [
    "CurveJob",
    "CurveResult",
    "SharedInputs",
    "StoreSpec",
    "curve_keys",
    "in_order",
    "plan_jobs",
    "run_curve",
    "run_jobs",
]


@dataclass(frozen=True)
class StoreSpec:
    """How a task builds its :class:`~medprune.scoring.store.ScoreStore` (the request fields shared by every method).

    Attributes:
        cache_dir: the score files' folder (on a path every worker sees, for a multi-node cluster).
        scoring, method_options: the request fields. device, batch_size: where and how to score.
        checksum: the model's checksum (every score file must have been made for it).
    """

    cache_dir: str
    scoring: ScoreRecipe
    method_options: Mapping[str, Any]
    device: str
    batch_size: int
    checksum: str

    @classmethod
    def of(cls, store: ScoreStore, device: str) -> StoreSpec:
        """The spec of an existing store (its cache folder must be set)."""
        assert store.cache_dir is not None, "tasks share scores through files: the store needs a cache folder"
        return cls(
            str(store.cache_dir),
            ScoreRecipe(store.n_per_class, store.sign, store.target),  # type: ignore[arg-type]
            store.method_options,
            device,
            store.batch_size,
            store.checksum,
        )


@dataclass(frozen=True)
class CurveJob:
    """One task: a (method, sampling) curve under every setting in ``params`` (same sign and seed) at ``rates``.

    Attributes:
        key: the task's name (``<model>/<seed>/<sign>/<method>/<sampling>``).
        params: the identifying fields of each setting's rows. method, sampling: the curve. rates: the rates.
        splits: the evaluated splits. done: the baselines and the job's rows already in the log.
        store: how to get the scores. couplings: groups pruned together. batch_size: images per forward pass.
        seed: the selection seed the scores are requested with. amp: float16 autocast in evaluation on CUDA.
    """

    key: str
    params: tuple[CurveParams, ...]
    method: str
    sampling: str
    rates: tuple[float, ...]
    splits: tuple[str, ...]
    store: StoreSpec
    seed: int
    couplings: Sequence[Sequence[str]] | None = None
    batch_size: int = 256
    done: Mapping[tuple[str, ...], Row] = field(default_factory=dict)
    amp: bool = False


@dataclass
class CurveResult:
    """What a task returns: its new ``rows`` and the score files it used (``{"method/sampling/seed": path}``)."""

    rows: list[Row]
    score_files: dict[str, str]


def curve_keys(
    params: Sequence[CurveParams], method: str, sampling: str, rates: Sequence[float], splits: Sequence[str]
) -> list[tuple[str, ...]]:
    """The row keys of one curve under every setting in ``params``, in the order a sweep appends them."""
    return [row_key(p.row(method, sampling, rate, split)) for p in params for rate in rates for split in splits]


def in_order(rows: Sequence[Row], order: Sequence[tuple[str, ...]]) -> list[Row]:
    """``rows`` in the planned ``order`` (the same whichever task finished first); rows not planned after, as given."""
    index = {key: i for i, key in enumerate(order)}
    return sorted(rows, key=lambda row: index.get(row_key(row), len(index)))


def plan_jobs(
    params: Mapping[int, Sequence[CurveParams]],
    curves: Sequence[tuple[str, str]],
    rates: Sequence[float],
    splits: Sequence[str],
    store_for: Callable[[str], StoreSpec],
    done: Mapping[tuple[str, ...], Row],
    couplings: Sequence[Sequence[str]] | None = None,
    batch_size: int = 256,
    amp: bool = False,
) -> tuple[list[CurveJob], list[tuple[str, ...]]]:
    """The unfinished curves of one model as jobs, and every row key of its sweep in the order of a sequential sweep.

    Args:
        params: per selection seed, the rows' identifying fields under each setting (in the settings' order).
        curves, rates, splits: the (method, sampling) pairs, rates and evaluated splits.
        store_for: the score store of a sign. done: the rows already in the log, the baselines among them.
        couplings, batch_size, amp: passed to every job.

    Returns:
        ``(jobs, order)``: one job per (seed, sign, curve) with a row still missing, each carrying the baselines and
        its own finished rows; ``order``: baselines, then seed x setting x curve x rate x split.
    """
    first = next(iter(params.values()))[0]
    baselines = [row_key(first.row(BASELINE, NO_SAMPLING, 0.0, split)) for split in splits]
    order = list(baselines)
    jobs: list[CurveJob] = []
    for seed, settings in params.items():
        order += [key for p in settings for m, s in curves for key in curve_keys([p], m, s, rates, splits)]
        signs: dict[str, list[CurveParams]] = {}
        for p in settings:
            signs.setdefault(p.scoring.sign, []).append(p)
        for sign, group in signs.items():
            for method, sampling in curves:
                keys = curve_keys(group, method, sampling, rates, splits)
                if all(key in done for key in keys):
                    continue
                jobs.append(
                    CurveJob(
                        f"{first.model}/{first.dataset}/seed{seed}/{sign}/{method}/{sampling}",
                        tuple(group),
                        method,
                        sampling,
                        tuple(rates),
                        tuple(splits),
                        store_for(sign),
                        seed,
                        couplings,
                        batch_size,
                        {key: done[key] for key in [*baselines, *keys] if key in done},
                        amp=amp,
                    )
                )
    return jobs, order


class _Collect:
    """The part of :class:`~medprune.sweep.table.RowLog` :func:`sweep_model` uses, kept in memory (and written through
    to ``sink`` at once when given)."""

    def __init__(self, done: Mapping[tuple[str, ...], Row], sink: RowLog | None = None) -> None:
        self._done = dict(done)
        self._sink = sink
        self.rows: list[Row] = []

    def finished(self) -> dict[tuple[str, ...], Row]:
        return self._done

    def append(self, row: Row) -> None:
        self._done[row_key(row)] = row
        self.rows.append(row)
        if self._sink is not None:
            self._sink.append(row)


def run_curve(
    model: nn.Module,
    train: Any,
    evaluation: Mapping[str, tuple[Tensor, Any]],
    recalibration: Tensor | None,
    class_names: Sequence[str],
    job: CurveJob,
    sink: RowLog | None = None,
) -> CurveResult:
    """Score ``job``'s curve (or reuse its score file) and evaluate it under every setting; return the new rows.

    Args:
        model: the trained classifier (masks are applied and undone per rate; it is returned unchanged).
        train: its training split (samples are selected from it; fine-tuning curves train on it).
        evaluation: ``{split: (inputs, labels)}`` pre-stacked.
        recalibration: the seed's BatchNorm recalibration images (``None`` when no setting recalibrates).
        class_names: class names (per-class columns).
        job: what to compute.
        sink: in the driver's process only, its row log: each row is written as soon as it is computed (a killed
            sweep then loses at most that row, as without an executor).
    """
    spec = job.store
    model = model.to(spec.device)
    store = ScoreStore(
        model,
        train,
        spec.cache_dir,
        n_per_class=spec.scoring.n_per_class,
        seed=job.seed,
        sign=spec.scoring.sign,
        target=spec.scoring.target,
        method_options=spec.method_options,
        device=spec.device,
        batch_size=spec.batch_size,
        checksum=spec.checksum,
        checksum_verified=True,  # the driver hashed these weights (run_sweep); masks are undone exactly per rate
    )
    scored: dict[tuple[str, str], dict[str, Tensor]] = {}

    def scores_for(method: str, sampling: str) -> dict[str, Tensor]:
        if (method, sampling) not in scored:
            scored[(method, sampling)] = store.scores(method, sampling, job.seed)
        return scored[(method, sampling)]

    evaluated = {split: evaluation[split] for split in job.splits}
    data = SweepInputs(evaluated, class_names, recalibration, CostCounter(model), job.batch_size, job.amp, train)
    log = _Collect(job.done, sink)
    for params in job.params:
        with torch.no_grad():
            sweep_model(model, params, [(job.method, job.sampling)], job.rates, scores_for, data, log, job.couplings)
    return CurveResult(log.rows, dict(store.files))


@dataclass
class SharedInputs:
    """The read-only inputs of one model's tasks, each shared once through ``executor.put``.

    Attributes:
        model, train, evaluation: references to the model, its training split and ``{split: (inputs, labels)}``.
        recalibration: per selection seed, a reference to its recalibration images (or ``None``).
        names: class names (small: passed by value).
    """

    model: Any
    train: Any
    evaluation: Any
    recalibration: Mapping[int, Any]
    names: Sequence[str]

    @classmethod
    def put(
        cls,
        executor: Executor,
        model: nn.Module,
        train: Any,
        evaluation: Mapping[str, tuple[Tensor, Any]],
        recalibration: Mapping[int, Tensor | None],
        class_names: Sequence[str],
    ) -> SharedInputs:
        """Put every large input once."""
        return cls(
            executor.put(model),
            executor.put(train),
            executor.put(dict(evaluation)),
            {seed: None if images is None else executor.put(images) for seed, images in recalibration.items()},
            list(class_names),
        )


def run_jobs(
    executor: Executor, jobs: Sequence[CurveJob], shared: SharedInputs, log: RowLog, resources: Resources
) -> tuple[dict[str, str], list[Outcome]]:
    """Run ``jobs`` on ``executor``, appending each finished job's new rows to ``log`` as it completes.

    The local executor's tasks write their rows to ``log`` as they compute them. A row already in the log (a job
    run twice after a lost worker) is not written again. Returns the score files used
    (``{"sign:method/sampling/seed": path}``) and the failed jobs' outcomes (the runner reports them after keeping
    every other job's rows).
    """
    files: dict[str, str] = {}
    failures: list[Outcome] = []
    written = set(log.finished())
    signs = {job.key: job.store.scoring.sign for job in jobs}
    local = isinstance(executor, LocalExecutor)  # in this process: rows go to the log as they are computed
    tasks = [
        Task(
            job.key,
            run_curve,
            (shared.model, shared.train, shared.evaluation, shared.recalibration.get(job.seed), shared.names, job),
            kwargs={"sink": log} if local else {},
            resources=resources,
        )
        for job in jobs
    ]
    outcomes = progress(executor.run(tasks), "sweep", "curve", total=len(tasks))  # ETA over the whole sweep
    for count, outcome in enumerate(outcomes, start=1):
        if not outcome.ok:
            failures.append(outcome)
            continue
        result: CurveResult = outcome.value
        for row in result.rows:
            if not local and row_key(row) not in written:
                log.append(row)
                written.add(row_key(row))
        files.update({f"{signs[outcome.key]}:{k}": v for k, v in result.score_files.items()})
        logger.debug("%s: %d rows (%d of %d curves)", outcome.key, len(result.rows), count, len(tasks))
    return files, failures
