"""``run_study(config)``: the paper's grid in one resumable run, answered claim by claim.

Grid: architectures x datasets x training seeds (one checkpoint each, :mod:`medprune.study.grid`) x sweep variants;
each sweep runs every (method, sampling) curve, selection seed, protocol and rate of :class:`SweepConfig` on the
validation and test splits. Order, checkpoint-major: train a checkpoint (or find it), sweep it, next checkpoint; then
one table, one report and the claims section. Layout of ``config.out``::

    checkpoints/<arch>-<dataset>-s<seed>-<key>/   model.safetensors, metrics.json, study_train.json (done marker)
    sweeps/<variant>-<key>/<checkpoint>/          rows.jsonl, results.csv, scores/ (run_sweep's folder)
    rows/<variant>-<key>/<checkpoint>.jsonl       the rows this study asked that sweep for (written when done)
    rows.jsonl, results.csv                       all of them; claims.csv, claims.md
    report/                                       run_report's folder; report.html opens with the claims section
    study.json                                    finished tasks with their keys and durations (atomic)

With ``executor: ray`` every checkpoint's training is one Ray task (all submitted at once; a checkpoint's sweeps start
as soon as it is trained) and every sweep sends its curves to the same cluster (see :mod:`medprune.runs.sweep`);
``out`` and ``data_root`` must then be paths every node sees. The local executor keeps the order above.

Resumable at every level: a finished checkpoint (same training key) is reused, a finished sweep (same options) is
skipped, an unfinished one resumes row by row, and the report and claims are rebuilt only when their rows changed.
Changed options make new keys, hence new folders: nothing is overwritten and old results are not mixed in.

>>> # result = run_study(build_config(StudyConfig, "configs/study-cpu.yaml")); result.claims_md
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medprune.atomic import write_json_atomic
from medprune.checkpoint import read_meta
from medprune.config import ConfigError, build_config, config_to_dict, option, save_config
from medprune.executors import (
    EXECUTOR_FIELDS,
    Executor,
    ExecutorSettings,
    Outcome,
    Task,
    check_executor_config,
    executor_for,
    raise_failures,
    task_resources,
)
from medprune.models import create_model
from medprune.rundir import OutputFolder, RunDir, output_folder
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import run_sweep
from medprune.runs.train import run_train
from medprune.study.claims import ClaimSettings, compute_claims
from medprune.study.claims_report import CLAIMS_HEADING, Scale, claims_html, claims_markdown
from medprune.study.grid import SweepPoint, TrainPoint, sweep_points, sweep_variants, training_points
from medprune.study.manifest import StudyManifest
from medprune.study.progress import GridProgress
from medprune.study.results import merge_rows, read_rows, row_digest, tag_rows, write_results, write_rows
from medprune.sweep.table import Row, read_csv, write_csv

logger = logging.getLogger(__name__)

__all__ = ["StudyConfig", "StudyResult", "check_inputs", "run_study", "shrink", "plan", "rows_path", "study_scale"]

#: ReportConfig fields the study sets.
_REPORT_OWNED = frozenset({"results", "out", "overwrite"})
_TRAIN_MARKER = "study_train.json"
#: Bumped when report.html's layout changes, so a finished study rebuilds its report (2: claims inside the page; 4: the
#: answer and key figure after the claims, figures before folded tables, palette PNGs).
_REPORT_LAYOUT = 4
#: Training fields ``quick`` sets on top of every recipe.
QUICK_TRAIN: dict[str, Any] = {
    "epochs": 1,
    "max_train_samples": 200,
    "max_eval_samples": 200,
    "bn_recalibration_samples": 200,
}


@dataclass
class StudyConfig(OutputFolder, ExecutorSettings):
    """Options of ``medprune study`` (``configs/study-cpu.yaml``, ``configs/study-paper.yaml``)."""

    out: str = output_folder("runs/study")
    data_root: str | None = option(None, help="folder holding the datasets", shown_default="$MEDPRUNE_DATA")
    architectures: list[str] = option(
        default_factory=lambda: ["vgg_small", "resnet_small", "vit_small"],
        help="the grid (seeds are training seeds; one checkpoint per combination)",
    )
    datasets: list[str] = option(
        default_factory=lambda: ["pneumoniamnist", "breastmnist"],
        help="the grid (seeds are training seeds; one checkpoint per combination)",
    )
    seeds: list[int] = option(
        default_factory=lambda: [0, 1], help="the grid (seeds are training seeds; one checkpoint per combination)"
    )
    train: dict[str, Any] = option(default_factory=dict, help="TrainConfig fields for every checkpoint")
    recipes: dict[str, Any] = option(
        default_factory=dict,
        help=(
            "per <dataset>, <architecture> or <architecture>/<dataset>: TrainConfig fields on"
            " top of train (the most specific wins)"
        ),
    )
    sweep: dict[str, Any] = option(
        default_factory=dict,
        help=(
            "SweepConfig fields for every sweep (methods, samplings, controls, seeds = "
            "selection seeds, protocols, rates, ...)"
        ),
    )
    variants: dict[str, Any] = option(
        default_factory=dict,
        help="{name: SweepConfig fields}: each checkpoint is swept once per variant (default: one, main)",
    )
    report: dict[str, Any] = option(
        default_factory=dict, help="ReportConfig fields (efficiency and heatmaps are off by default)"
    )
    claims: dict[str, Any] = option(
        default_factory=dict,
        help="ClaimSettings fields (tolerance, table1_rates, small_rate, ...)",
        limit={"n_resamples": 1_000_000},  # the report's bound: each resample redoes every claim's statistic
    )
    device: str = option("cpu", help="cpu, cuda or auto, for training and sweeps unless train / sweep set it")
    threads: int | None = option(
        None, help="torch CPU threads", shown_default="torch's default; 1 is fastest on a shared machine"
    )
    progress: bool | None = option(None, help="a progress bar", shown_default="only on a terminal; log lines otherwise")
    quick: bool = option(
        False,
        help="shrink every step for a smoke test (1 epoch on 200 images, LRP + controls, rates 0 and 0.3, 1 seed)",
    )


@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes:
        out: the study folder. results_csv, rows_jsonl: the merged table. report: the HTML report.
        claims: claim rows. claims_csv, claims_md: the claims section. scale: what it was run at.
        trained, reused: checkpoint names trained in this run / found finished. swept, skipped: sweep ids run in
        this run (new or resumed) / found finished. wall_time_s: this run.
    """

    out: Path
    results_csv: Path
    rows_jsonl: Path
    report: Path
    claims: list[Row]
    claims_csv: Path
    claims_md: Path
    scale: Scale
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def shrink(config: StudyConfig) -> StudyConfig:
    """The ``quick`` version of a config (same grid, every step tiny); a new object."""
    sweep = {
        **config.sweep,
        "methods": ["lrp"],
        "samplings": ["random"],
        "controls": ["random", "magnitude"],
        "rates": [0.0, 0.3],
        "seeds": [0],
        "n_per_class": 3,
        "recalibrate_samples": 64,
    }
    return dataclasses.replace(config, sweep=sweep, claims={**config.claims, "n_resamples": 500}, quick=True)


@dataclass
class _Plan:
    points: list[TrainPoint]
    sweeps: list[SweepPoint]
    claims: ClaimSettings
    report: dict[str, Any]


def plan(config: StudyConfig) -> _Plan:
    """Resolve and check the whole grid before any work (training configs, sweep variants, report and claims).

    Raises:
        ConfigError: a bad value anywhere, naming where (grid point, recipe, variant, section) and the valid values.
    """
    train = {"device": config.device, **config.train}
    final = QUICK_TRAIN if config.quick else {}
    check_executor_config(config)
    if not config.architectures or not config.datasets or not config.seeds:
        raise ConfigError("architectures, datasets and seeds must each list at least one value")
    points = training_points(
        config.architectures, config.datasets, config.seeds, train, config.recipes, config.out, config.data_root, final
    )
    variants = sweep_variants({"device": config.device, **config.sweep}, config.variants)
    sweeps = sweep_points(points, variants, config.out)
    owned = sorted(set(config.report) & _REPORT_OWNED)
    if owned:
        raise ConfigError(f"report sets {owned}: the study sets these")
    report = {"efficiency": False, "heatmaps": False, **config.report}
    try:
        build_config(ReportConfig, overrides=report)
        claims = build_config(ClaimSettings, overrides=config.claims)
    except ConfigError as error:
        raise ConfigError(f"study report/claims options: {error}") from None
    return _Plan(points, sweeps, claims, report)


def _train(point: TrainPoint) -> tuple[bool, float]:
    """Train ``point`` unless its folder holds a finished checkpoint of the same key; (trained?, seconds)."""
    marker = point.folder / _TRAIN_MARKER
    if point.checkpoint.is_file() and marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("key") == point.key and done.get("config") == point.keyed_config():
            logger.info("study: reusing checkpoint %s", point.name)
            return False, float(done.get("seconds", 0.0))
    started = time.perf_counter()
    result = run_train(point.train)
    seconds = time.perf_counter() - started
    test = result.test_metrics
    write_json_atomic(
        marker,
        {"key": point.key, "config": point.keyed_config(), "seconds": round(seconds, 2), "test": _round(test)},
    )
    logger.info("study: trained %s in %.0f s (test accuracy %.4f)", point.name, seconds, test["accuracy"])
    return True, seconds


def _round(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "auroc")}


def rows_path(out: Path, sweep: SweepPoint) -> Path:
    """Where a finished sweep's rows for this study are (written when the sweep is done)."""
    return out / "rows" / f"{sweep.variant}-{sweep.key}" / f"{sweep.point.name}.jsonl"


def _sweep(sweep: SweepPoint, out: Path, config: StudyConfig, executor: Executor) -> list[Row]:
    """Run (or resume) one sweep on ``executor`` and keep exactly the rows it was asked for, tagged with the grid
    point."""
    placement = {name: getattr(config, name) for name in EXECUTOR_FIELDS}
    result = run_sweep(dataclasses.replace(sweep.config(config.data_root), **placement), executor=executor)
    point = sweep.point
    rows = tag_rows(result.rows, variant=sweep.variant, train_seed=point.seed, family=point.family, run=point.name)
    write_rows(rows, rows_path(out, sweep))
    return rows


def study_scale(
    points: list[TrainPoint], sweeps: list[SweepPoint], device: str, params: dict[str, int] | None = None
) -> Scale:
    """Image sizes, parameter counts, datasets and seeds of ``points`` swept by ``sweeps`` (the claims' scale line).

    ``params`` (architecture -> parameter count) is a cache: missing architectures are counted from the checkpoints
    and added to it.
    """
    params = {} if params is None else params
    for point in points:
        if point.architecture not in params:
            spec = dict(read_meta(point.checkpoint)["model"])
            params[point.architecture] = sum(p.numel() for p in create_model(**spec).parameters())
    seeds = sorted({s for sweep in sweeps for s in sweep.config(None).seeds})
    return Scale(
        image_sizes=sorted({p.train.image_size for p in points}),
        models={a: params[a] for a in dict.fromkeys(p.architecture for p in points)},
        datasets=list(dict.fromkeys(p.dataset for p in points)),
        checkpoints=len(points),
        training_seeds=sorted({p.seed for p in points}),
        selection_seeds=seeds,
        device=device,
    )


def _conclude(out: Path, todo: _Plan, rows: list[Row], manifest: StudyManifest, scale: Scale) -> tuple[Path, list[Row]]:
    """Claims (``claims.csv``, ``claims.md``) and the report, whose page opens with the claims section; rebuilt only
    when the rows or their options changed."""
    key = row_digest(rows, [todo.report, config_to_dict(todo.claims), config_to_dict(scale), _REPORT_LAYOUT])
    report_html = out / "report" / "report.html"
    claims_csv, claims_md = out / "claims.csv", out / "claims.md"
    if manifest.is_done("report", key) and report_html.is_file() and claims_csv.is_file() and claims_md.is_file():
        logger.info("study: report and claims up to date")
        return report_html, read_csv(claims_csv)
    started = time.perf_counter()
    families = {p.architecture: p.family for p in todo.points}
    claims = compute_claims(rows, families, todo.claims)
    section = (CLAIMS_HEADING, claims_html(claims, scale, todo.claims))
    # the study owns its report folder: changed options rebuild it
    report_config = ReportConfig(
        results=[str(out / "rows.jsonl")], out=str(out / "report"), overwrite=True, **todo.report
    )
    report = run_report(report_config, sections=[section])
    write_csv(claims, claims_csv)
    text = claims_markdown(claims, scale, todo.claims) + "\nFull report: [report/report.html](report/report.html)\n"
    tmp = claims_md.with_name(f".{claims_md.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(claims_md)
    manifest.finish("report", key=key, seconds=time.perf_counter() - started, group="report")
    return report.html, claims


def check_inputs(config: StudyConfig) -> _Plan:
    """Every check of ``config`` before any work: :func:`plan` resolves the whole grid (training configs, sweep
    variants, report and claims) and refuses a bad value anywhere."""
    return plan(config)


def run_study(config: StudyConfig) -> StudyResult:
    """Train, sweep, report and test the claims for the whole grid of ``config`` (resumable; see module docstring).

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir` (one writer
    at a time). Every option is cosmetic to that folder's record: the study keys each checkpoint and sweep folder
    by its options, so changed options resume the folder and run only what changed, never mixing old results in;
    ``config.overwrite`` moves the folder's content aside and starts afresh.
    """
    started = time.perf_counter()
    config = shrink(config) if config.quick else config
    todo = check_inputs(config)
    out = Path(config.out)
    every_option = [f.name for f in dataclasses.fields(StudyConfig)]
    with RunDir(out, "study", config, cosmetic=every_option, overwrite=config.overwrite):
        threads = torch.get_num_threads()
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            with executor_for(config) as executor:
                return _run(config, todo, out, started, executor)
        finally:
            torch.set_num_threads(threads)


def _run(config: StudyConfig, todo: _Plan, out: Path, started: float, executor: Executor) -> StudyResult:
    save_config(config, out)
    manifest = StudyManifest(out / "study.json")
    tasks = [(f"train/{p.name}", f"train/{p.architecture}/{p.dataset}") for p in todo.points]
    tasks += [(f"sweep/{s.name}", f"sweep/{s.variant}/{s.point.architecture}/{s.point.dataset}") for s in todo.sweeps]
    keys = {f"train/{p.name}": p.key for p in todo.points} | {f"sweep/{s.name}": s.key for s in todo.sweeps}
    done = {t for t, _ in tasks if manifest.is_done(t, keys[t])}
    logger.info(
        "study: %d checkpoints x %d variants; %d of %d tasks done",
        len(todo.points),
        len(todo.sweeps) // max(len(todo.points), 1),
        len(done),
        len(tasks),
    )
    progress = GridProgress(tasks, done, manifest.durations(), config.progress)
    result = StudyResult(out, out / "results.csv", out / "rows.jsonl", out, [], out, out, None)  # type: ignore[arg-type]
    tables: dict[str, list[Row]] = {}  # by sweep, merged in the grid's order whatever finished first
    failures: list[Outcome] = []
    points = {f"train/{p.name}": p for p in todo.points}
    trainings = executor.run([Task(t, _train, (p,), resources=task_resources(config)) for t, p in points.items()])
    try:
        progress.start(next(iter(points)))
        for outcome in trainings:  # the local executor trains one checkpoint per step: checkpoint-major order
            task, point = outcome.key, points[outcome.key]
            if not outcome.ok:
                failures.append(outcome)  # its sweeps wait for a rerun; the other checkpoints go on
                continue
            trained, seconds = outcome.value
            (result.trained if trained else result.reused).append(point.name)
            if not manifest.is_done(task, point.key):
                manifest.finish(task, key=point.key, seconds=seconds, group=dict(tasks)[task])
            progress.finish(task, seconds)
            for sweep in (s for s in todo.sweeps if s.point is point):
                task = f"sweep/{sweep.name}"
                if manifest.is_done(task, sweep.key) and rows_path(out, sweep).is_file():
                    tables[sweep.name] = read_rows(rows_path(out, sweep))
                    result.skipped.append(sweep.name)
                    continue
                progress.start(task)
                begun = time.perf_counter()
                tables[sweep.name] = _sweep(sweep, out, config, executor)
                seconds = time.perf_counter() - begun
                manifest.finish(
                    task, key=sweep.key, seconds=seconds, group=dict(tasks)[task], rows=len(tables[sweep.name])
                )
                result.swept.append(sweep.name)
                progress.finish(task, seconds)
            waiting = [t for t in points if t not in progress.done]
            if waiting:
                progress.start(waiting[0])
    finally:
        trainings.close()
        progress.close()
    raise_failures(failures, "study training")
    rows = merge_rows([tables[s.name] for s in todo.sweeps if s.name in tables])
    write_results(rows, out)
    params: dict[str, int] = dict(manifest.data.get("params", {}))
    scale = study_scale(todo.points, todo.sweeps, config.device, params)
    manifest.set("params", params)  # parameter counts cached for the next run
    result.scale = scale
    result.report, result.claims = _conclude(out, todo, rows, manifest, scale)
    result.claims_csv, result.claims_md = out / "claims.csv", out / "claims.md"
    result.wall_time_s = round(time.perf_counter() - started, 1)
    logger.info("study done in %.0f s: %d rows, claims in %s", result.wall_time_s, len(rows), result.claims_md)
    return result
