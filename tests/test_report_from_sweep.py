"""A small real sweep (PneumoniaMNIST, untrained ResNet) and the report built from it."""

from __future__ import annotations

import csv

import pytest
import torch

from medprune.checkpoint import save_checkpoint
from medprune.models import create_model
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.scoring.request import ScoreRecipe
from medprune.sweep.table import RowLog


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, data_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("small_sweep")
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    checkpoint = save_checkpoint(root / "train" / "model", model, meta)
    config = SweepConfig(
        checkpoints=[str(checkpoint)],
        out=str(root / "sweep"),
        data_root=str(data_root),
        methods=["lrp"],
        samplings=["random"],
        rates=[0.0, 0.3],
        scoring=ScoreRecipe(n_per_class=2),
        seeds=[0],
    )
    rows = run_sweep(config).rows
    yield root / "sweep", config, rows
    torch.set_num_threads(threads)


def test_sweep_writes_one_row_per_curve_and_rate(sweep_dir):
    out, config, rows = sweep_dir
    assert len(rows) == 2 * (1 + 3 * 2)  # (baseline + (lrp/random, random/none, magnitude/none) x 2 rates) x 2 splits
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 14 and {r["split"] for r in table} == {"val", "test"}
    assert {"recall_normal", "specificity_pneumonia", "auroc", "achieved_rate", "params_removed"} <= set(table[0])
    assert "predictions" not in table[0]  # per-image columns stay in rows.jsonl
    pruned = [r for r in table if float(r["rate"]) == 0.3]
    assert all(0.29 <= float(r["achieved_rate"]) <= 0.31 for r in pruned)
    # uncoupled masks remove parameters only where no residual coupling keeps the channel (magnitude may hit only those)
    assert all(int(r["params_removed"]) > 0 for r in pruned if r["method"] in ("lrp", "random"))


def test_rerun_recomputes_nothing(sweep_dir):
    out, config, _ = sweep_dir
    before = (out / "rows.jsonl").read_bytes()
    rows = run_sweep(config).rows
    assert (out / "rows.jsonl").read_bytes() == before and len(rows) == 14
    assert RowLog(out / "rows.jsonl").read()[0]["method"] == "baseline"


def test_report_from_small_sweep(sweep_dir, tmp_path):
    out, _, _ = sweep_dir
    config = ReportConfig(
        results=[str(out)],
        out=str(tmp_path / "report"),
        heatmap_per_class=1,
        similarity_images=1,
        similarity_rates=[0.3],
        tolerances=[0.01, 0.5],
    )
    result = run_report(config)
    page = result.html.read_text()
    assert "Table 1 (test split)" in page and "data:image/png;base64," in page and "chosen on validation" in page
    assert "Paired comparisons" in page and result.paired and result.markdown.is_file()
    assert {p.name.split("_")[0] for p in result.figures} >= {"key", "class", "curve", "heatmaps", "similarity"}
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert len(result.lossless) == 3
    # the efficiency table measured a physically smaller model for some curve (tolerance 0.5 allows rate 0.3)
    smaller = [r for r in result.efficiency if r["method"] != "unpruned"]
    assert smaller and all(r["params"] < result.efficiency[0]["params"] for r in smaller)
    for name in ("table1.csv", "lossless_rates.csv", "efficiency.csv", "paper_table1.csv", "paired.csv"):
        assert (tmp_path / "report" / name).is_file()
    # the efficiency rows name the metric their rate was chosen on (the lossless metric, balanced accuracy)
    assert {r["criterion"].split(" ≤ ")[0] for r in smaller} <= {"balanced accuracy drop", "worst-class recall drop"}
    # one checkpoint: n = 1 beside the rows, a verdict from the four words with its family, the method notes
    assert result.table1[0]["n"] == 1 and "<td>1 ckpt (1 rows) †</td>" in page
    # the answer first, its key figure next, the tables (folded, their CSV linked) after every figure
    answer, key = page.index("class='answer'"), page.index('alt="key figure: resnet_small on pneumoniamnist"')
    assert answer < key < page.index("Per-class recall") < page.index("<details><summary>Table 1 (test split)")
    assert "<a href='table1.csv'>" in page and "<a href='paired.csv'>" in page
    assert "The answer" in result.markdown.read_text().split("### Table 1")[0]
    assert {p["verdict"] for p in result.paired} <= {"better", "worse", "equivalent", "inconclusive"}
    assert all(p["family"].startswith("pneumoniamnist / paper / rate ") for p in result.paired)
    assert "Holm" in page and "hierarchical (clustered) bootstrap" in page and "validation images" in page


def test_report_refuses_a_negative_equivalence_margin(sweep_dir, tmp_path):
    out, _, _ = sweep_dir
    config = ReportConfig(results=[str(out)], out=str(tmp_path / "report"), equivalence_margin=-0.01)
    with pytest.raises(ValueError, match="equivalence_margin must be a finite number >= 0"):
        run_report(config)
    assert not (tmp_path / "report").exists()
