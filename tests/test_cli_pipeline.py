"""``medprune prune | sweep | report | demo``: config plumbing, refusals with the valid values, outputs on disk."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.cli.main import main
from medprune.data import load_dataset
from medprune.models import create_model
from medprune.scoring.request import ScoreRequest
from medprune.scoring.store import compute_scores


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return str(save_checkpoint(tmp_path / "train" / "model", model, meta))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--set", "bogus=1"], "unknown option.*bogus.*valid options: .*checkpoints"),
        (["sweep", "--scope", "diagonal"], "scope='diagonal' is not allowed; valid values: global, layer"),
        (["prune", "--set", "output=onnx"], "valid values: masked, physical, both"),
        (["report", "--results", "/nonexistent/results.csv"], "does not exist"),
        (["demo", "--set", "deploy_criterion=speed"], "valid values: accuracy, worst_recall"),
        (["prune", "--rate", "1.5", "--checkpoint", "x.safetensors"], r"rate must be a number in \[0, 1\)"),
        (["prune", "x.safetensors", "--rate", "1.5"], r"rate must be a number in \[0, 1\)"),
        (["prune", "a.safetensors", "--checkpoint", "b.safetensors"], "checkpoint given twice"),
    ],
)
def test_bad_options_exit_2_with_valid_values(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err


def test_prune_cli_writes_masked_and_physical_checkpoints(tmp_path, checkpoint, data_root, capsys):
    out = tmp_path / "pruned"
    argv = [
        "prune",
        checkpoint,  # positional, like evaluate / score / compress
        "--out",
        str(out),
        "--method",
        "magnitude",
        "--rate",
        "0.4",
        "--data-root",
        str(data_root),
    ]
    assert main(argv) == 0
    assert "physical accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["physical"]["accuracy"] == metrics["masked"]["accuracy"] == metrics["reloaded_accuracy"]
    assert metrics["cost_after"]["params"] < metrics["cost_before"]["params"]
    small, meta = load_checkpoint(out / "model.safetensors")
    assert sum(p.numel() for p in small.parameters()) == metrics["cost_after"]["params"]
    assert meta["pruning"]["method"] == "magnitude" and meta["pruning"]["sampling"] == "none"
    assert yaml.safe_load((out / "config.yaml").read_text())["rate"] == 0.4
    assert (out / "masked.safetensors").is_file() and (out / "structure.json").is_file()


def test_sweep_then_report_cli_from_yaml(tmp_path, checkpoint, data_root, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"methods": [], "controls": ["magnitude"], "rates": [0.0, 0.5]}))
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        "--config",
        str(config),
        "--checkpoints",
        checkpoint,
        "--out",
        str(out),
        "--data-root",
        str(data_root),
        "--set",
        "normalize=max",
    ]
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["ranking"]["normalize"] == "max" and saved["controls"] == ["magnitude"] and saved["methods"] == []
    # header + (baseline + magnitude x 2 rates x 3 selection seeds) x (val, test)
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 2 * (1 + 2 * 3)
    report = tmp_path / "report"
    assert main(["report", "--results", str(out), "--out", str(report), "--no-heatmaps", "--no-efficiency"]) == 0
    assert "report:" in capsys.readouterr().out
    assert (report / "report.html").is_file() and (report / "config.yaml").is_file()
    assert list(report.glob("curve_*.png"))


def test_prune_refuses_scores_made_for_another_model(tmp_path, checkpoint, data_root, capsys):
    torch.manual_seed(1)
    other = create_model("resnet_small", num_classes=2, image_size=28)  # same architecture, other weights
    train = load_dataset("pneumoniamnist", data_root, image_size=28).train
    record = compute_scores(other, train, ScoreRequest("magnitude"), cache_dir=tmp_path / "scores")
    argv = [
        "prune",
        "--checkpoint",
        checkpoint,
        "--out",
        str(tmp_path / "p"),
        "--scores",
        str(record.path),
        "--data-root",
        str(data_root),
    ]
    assert main(argv) == 2
    assert "made for another model" in capsys.readouterr().err
    assert not (tmp_path / "p" / "model.safetensors").exists()
