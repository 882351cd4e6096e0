"""``medprune study``: a tiny real grid end to end, resume after SIGKILL, retraining on a changed recipe, bad input."""

from __future__ import annotations

import html
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medprune.cli.main import main
from medprune.config import ConfigError, build_config
from medprune.runs.study import StudyConfig, plan, run_study, shrink
from medprune.study.claims_report import claims_html
from medprune.sweep.protocols import Setting
from medprune.sweep.table import read_csv

#: 2 architectures x PneumoniaMNIST x 2 training seeds, 1 epoch on 128 images, LRP + random control at rate 0.3.
TINY = {
    "architectures": ["resnet_small", "vgg_small"],
    "datasets": ["pneumoniamnist"],
    "seeds": [0, 1],
    "threads": 1,
    "progress": False,
    "train": {
        "image_size": 28,
        "epochs": 1,
        "max_train_samples": 128,
        "max_eval_samples": 64,
        "bn_recalibration_samples": 64,
    },
    "sweep": {
        "methods": ["lrp"],
        "samplings": ["random"],
        "controls": ["random"],
        "rates": [0.0, 0.3],
        "seeds": [0],
        "n_per_class": 2,
        "protocols": ["paper"],
    },
    "claims": {"n_resamples": 200},
}
UNSTABLE = ("seconds", "finished_at")


def _config_file(folder: Path, data_root: Path, **changes) -> Path:
    values = {**TINY, "data_root": str(data_root), **changes}
    path = folder / "study.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


def _table(path: Path) -> list[dict]:
    rows = [{k: v for k, v in row.items() if k not in UNSTABLE} for row in read_csv(path)]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, data_root):
    """One uninterrupted run of the tiny study (in this process)."""
    folder = tmp_path_factory.mktemp("study")
    config = build_config(StudyConfig, _config_file(folder, data_root), {"out": str(folder / "out")})
    return config, run_study(config)


def test_tiny_study_trains_sweeps_reports_and_answers_claims(tiny_study):
    config, result = tiny_study
    assert len(result.trained) == 4 and not result.reused
    assert len(result.swept) == 4 and not result.skipped
    rows = read_csv(result.results_csv)
    # per checkpoint: 2 baselines (val, test) + 2 curves x 2 rates (0 and 0.3) x 2 splits
    assert len(rows) == 4 * (2 + 2 * 2 * 2)
    assert {r["split"] for r in rows} == {"val", "test"}
    assert {r["family"] for r in rows} == {"resnet", "vgg"} and {r["train_seed"] for r in rows} == {0, 1}
    assert result.report.is_file() and (result.out / "report" / "table1.csv").is_file()
    claims = read_csv(result.claims_csv)
    assert {r["claim"] for r in claims} >= {"a"} and {r["family"] for r in claims if r["claim"] == "a"} == {
        "resnet",
        "vgg",
    }
    text = result.claims_md.read_text()
    assert "28 px" in text and "NOT the paper's scale" in text and "4 checkpoints" in text
    manifest = json.loads((result.out / "study.json").read_text())
    assert len([t for t in manifest["tasks"] if t.startswith(("train/", "sweep/"))]) == 8


def test_rerun_recomputes_nothing(tiny_study):
    config, first = tiny_study
    before = _table(first.results_csv)
    again = run_study(config)
    assert not again.trained and len(again.reused) == 4
    assert not again.swept and len(again.skipped) == 4
    assert _table(again.results_csv) == before


def test_changed_recipe_retrains_only_that_checkpoint(tiny_study, tmp_path):
    config, first = tiny_study
    out = tmp_path / "out"
    shutil.copytree(first.out, out)
    changed = build_config(
        StudyConfig,
        overrides={**config.__dict__, "out": str(out), "recipes": {"vgg_small": {"lr": 0.002}}},
    )
    result = run_study(changed)
    assert sorted(result.trained) != sorted(first.trained)
    assert all(name.startswith("vgg_small-") for name in result.trained) and len(result.trained) == 2
    assert sorted(result.reused) == sorted(n for n in first.trained if n.startswith("resnet_small-"))
    assert all("resnet_small-" in s for s in result.skipped) and all("vgg_small-" in s for s in result.swept)
    vgg_old = {n for n in first.trained if n.startswith("vgg_small-")}
    assert not vgg_old & set(result.trained)  # a new key, a new folder
    assert {r["checkpoint"] for r in read_csv(result.results_csv)} != {
        r["checkpoint"] for r in read_csv(first.results_csv)
    }


def _progress(out: Path) -> int:
    """Finished tasks recorded so far (0 while study.json does not exist or is being replaced)."""
    try:
        return len(json.loads((out / "study.json").read_text())["tasks"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_at_random_moments_then_restart_gives_the_same_table(tiny_study, tmp_path, data_root):
    _, clean = tiny_study
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medprune.cli.main", "study", "--config"]
    command += [str(_config_file(tmp_path, data_root)), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    rng = random.Random(11)
    # kill 1 while the first checkpoints are trained, kill 2 once a later sweep has written rows (2 kills keep the
    # test near a minute: each restart pays the interpreter and torch start-up again)
    waits = [
        lambda: (out / "checkpoints").is_dir(),
        lambda: _progress(out) >= 3 and len(list(out.glob("sweeps/*/*/rows.jsonl"))) >= 2,
    ]
    kills = 0
    for ready in waits:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the study finished before it could be interrupted"
    assert _progress(out) < 9  # 8 tasks + report: something was left to do
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _table(out / "results.csv") == _table(clean.results_csv)
    assert _table(out / "claims.csv") == _table(clean.claims_csv)
    assert _table(out / "report" / "table1.csv") == _table(clean.out / "report" / "table1.csv")


def test_bad_config_refused_before_work(tmp_path, data_root, capsys):
    config = build_config(StudyConfig, overrides={"out": str(tmp_path / "o"), "recipes": {"vgg19": {"epochs": 2}}})
    with pytest.raises(ConfigError, match="no grid point matches recipe 'vgg19'"):
        plan(config)
    with pytest.raises(ConfigError, match="variant 'main'.*scope"):
        plan(build_config(StudyConfig, overrides={"sweep": {"scope": "everywhere"}}))
    with pytest.raises(ConfigError, match="sets \\['seed'\\]"):
        plan(build_config(StudyConfig, overrides={"recipes": {"pneumoniamnist": {"seed": 3}}}))
    code = main(["study", "--out", str(tmp_path / "o"), "--set", "architectures=resnet_smal"])
    assert code == 2 and "resnet_smal" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shipped_configs_resolve_and_quick_shrinks_every_step():
    repo = Path(__file__).resolve().parents[1]
    cpu = build_config(StudyConfig, repo / "configs" / "study-cpu.yaml")
    full = plan(cpu)
    # 3 architectures x 2 datasets x 5 training seeds: the independent runs of docs/analysis-plan.md
    assert len(full.points) == 30 and {p.family for p in full.points} == {"vgg", "resnet", "vit"}
    recipe = {(p.architecture, p.dataset): p.train for p in full.points}
    assert (
        recipe[("resnet_small", "pneumoniamnist")].epochs == 15 and recipe[("resnet_small", "pneumoniamnist")].augment
    )
    assert recipe[("vgg_small", "breastmnist")].epochs == 30 and not recipe[("vgg_small", "breastmnist")].augment
    sweep = full.sweeps[0].config(None)
    assert sweep.seeds == [0] and sweep.protocols == ["paper", "default"] and "taylor" in sweep.controls
    quick = plan(shrink(cpu))
    assert len(quick.points) == 30 and all(p.train.epochs == 1 for p in quick.points)
    assert quick.sweeps[0].config(None).rates == [0.0, 0.3]
    assert {p.key for p in quick.points}.isdisjoint({p.key for p in full.points})  # quick never reuses full runs
    paper = plan(build_config(StudyConfig, repo / "configs" / "study-paper.yaml", {"device": "cpu"}))
    assert {p.train.image_size for p in paper.points} == {224}
    assert {p.architecture for p in paper.points} == {"vgg19", "resnet50", "vit_b_16"}


def test_report_page_holds_the_claims_section_with_scale(tiny_study):
    config, result = tiny_study
    page = result.report.read_text(encoding="utf-8")
    claims = read_csv(result.claims_csv)
    assert claims_html(result.claims, result.scale, plan(config).claims) in page  # statistics, CIs, verdicts, notes
    assert page.index("Claims of the paper, tested") < page.index("What was swept")  # the study's answer comes first
    # then the report's own layout: the answer per model with its key figure, before the sweep and the tables
    assert page.index("Claims of the paper, tested") < page.index("class='answer'") < page.index("What was swept")
    assert html.escape(result.scale.describe()) in page and "28 px" in page and "NOT the paper" in page
    for row in claims:  # every claim with its statistic and verdict, as in claims.csv
        statement = row["statement"] if row["claim"] in ("b", "c") else f"({row['claim']}) {row['statement']}"
        assert f"<tr><td>{html.escape(statement)}</td><td>{html.escape(str(row['setting']))}</td>" in page
        assert f"<td>{html.escape(str(row['verdict']))}</td></tr>" in page
    assert page.count("<tr><td>(a) ") == sum(r["claim"] == "a" for r in claims) >= 2  # one per family


def test_redefining_a_named_protocol_changes_the_sweep_key(monkeypatch, tmp_path):
    import medprune.study.grid as grid  # noqa: PLC0415 - the module whose global is patched

    config = build_config(
        StudyConfig, overrides={**TINY, "out": str(tmp_path), "sweep": {**TINY["sweep"], "protocols": ["default"]}}
    )
    before = {s.key for s in plan(config).sweeps}
    monkeypatch.setitem(grid.PROTOCOLS, "default", Setting.of("layer", "rank", "abs", "bn"))
    after = {s.key for s in plan(config).sweeps}
    assert before.isdisjoint(after)  # finished sweeps of the old default are not reused as the new one
