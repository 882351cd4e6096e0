"""Malformed sweep requests are refused with clear errors before any work is done."""

from __future__ import annotations

import pytest
import torch

from medprune.checkpoint import save_checkpoint
from medprune.config import build_config
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.runs.sweep import SweepConfig, curve_list, run_sweep, validate_config
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.table import RowLog


@pytest.fixture()
def checkpoint(tmp_path):
    model = create_model("resnet_small", num_classes=2, image_size=16)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return str(save_checkpoint(tmp_path / "ckpt" / "model", model, meta))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rates": [0.1, 1.0]}, r"in \[0, 1\)"),
        ({"rates": [-0.05]}, r"in \[0, 1\)"),
        ({"rates": []}, "rates is empty"),
        ({"methods": ["lrp", "gradcam"]}, "unknown method.*gradcam.*valid methods: .*lrp"),
        ({"controls": ["nonsense"]}, "unknown method"),
        ({"samplings": ["kmeans"]}, "unknown sampling.*valid samplings: random, confidence, clustering"),
        ({"method_options": {"lrp": {"gamma_typo": 1}}}, "unknown option.*gamma_typo"),
        ({"checkpoints": []}, "no checkpoints"),
        ({"n_per_class": 0}, "n_per_class"),
        ({"seeds": []}, "seeds"),
        ({"splits": ["test"]}, "lacks 'val'"),
        ({"splits": ["val", "train"]}, "splits.*valid values: val, test"),
        ({"protocols": ["paperish"]}, "protocols entry='paperish'.*valid values: paper, default"),
        ({"search": {"normalise": ["mean"]}}, "unknown field.*normalise"),
        ({"search": {"normalize": ["mean", "median"]}}, "normalize='median'"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path, checkpoint, change, message):
    with pytest.raises(ValueError, match=message):
        run_sweep(
            build_config(SweepConfig, overrides={"checkpoints": [checkpoint], "out": str(tmp_path / "sweep"), **change})
        )
    assert not (tmp_path / "sweep").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, checkpoint):
    config = SweepConfig(checkpoints=[checkpoint], out=str(tmp_path / "sweep"), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available; use device=cpu or auto"):
        run_sweep(config)
    assert not (tmp_path / "sweep").exists()


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate_config(SweepConfig(checkpoints=[str(tmp_path / "nope.safetensors")]))


def test_rates_are_sorted_deduplicated_and_include_zero(checkpoint):
    assert validate_config(SweepConfig(checkpoints=[checkpoint], rates=[0.3, 0.1, 0.30000000000000004])) == [
        0.0,
        0.1,
        0.3,
    ]


def test_controls_are_data_free_and_scored_once():
    pairs = curve_list(SweepConfig(methods=["lrp"], samplings=["random", "clustering"]))
    assert pairs == [("lrp", "random"), ("lrp", "clustering"), ("random", "none"), ("magnitude", "none")]


def test_scores_for_another_model_are_refused_before_any_row(tmp_path):
    model = create_model("resnet_small", num_classes=2, image_size=16)
    other = create_model("resnet_small", num_classes=3, image_size=16)
    other.layer1[0].conv1 = torch.nn.Conv2d(16, 8, 3)
    foreign = {g.name: torch.rand(g.num_units) for g in unit_groups(other)}
    log = RowLog(tmp_path / "rows.jsonl")
    data = (torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8,)))
    with pytest.raises(ValueError, match="another model"):
        sweep_model(
            model,
            CurveParams("resnet_small", "d", "x"),
            [("lrp", "random")],
            [0.0, 0.5],
            lambda m, s: foreign,
            SweepInputs({"val": data, "test": data}, ["a", "b"]),
            log,
        )
    assert log.read() == []
